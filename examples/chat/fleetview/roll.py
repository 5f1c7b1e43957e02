"""Roll the workers of ``make run`` one by one, as a Deployment's rolling update does.

For each worker: start a new one and wait until it is ready, then SIGTERM the old one; its
drain hands every WebSocket back and the interfaces re-home them onto the others, so no client
socket closes. ``make run`` listens for roll requests on a Unix socket (``.run/devstack.sock``,
owner only); two clients use it:

    make roll-workers                  # python examples/chat/fleetview/roll.py --dir .run
    # or the "Roll the workers" button on the demo's /fleet/ page (staff only)

Each step is reported as one line; the last says how many sockets were re-homed and how many
closed (by code) during the roll, from the fleet's own status (``channels_fleet.fleet``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channels_fleet.fleet import FleetStatus

SOCKET_NAME = "devstack.sock"
ROLL = b"roll-workers\n"
DRAIN_WAIT = 40.0  # a worker's drain takes up to CHANNELS_FLEET_DRAIN_TIMEOUT (25 s)
STATUS_SETTLE = 1.5  # a heartbeat's status is up to one interval (1 s) old

Say = Callable[[str], None]


class WorkerRoll:
    """Rolls the running workers of ``stack`` (a ``channels_fleet.dev.stack.FleetStack``);
    ``start_worker()`` starts one more and returns its ``ServiceProcess`` once ready."""

    def __init__(self, stack: Any, start_worker: Callable[[], Any]) -> None:
        self.stack = stack
        self.start_worker = start_worker
        self._busy = threading.Lock()

    def run(self, say: Say) -> bool:
        """Roll every worker, reporting each step to ``say``; False if a roll is running."""
        if not self._busy.acquire(blocking=False):
            say("busy: a roll is already running")
            return False
        try:
            self._roll(say)
        except Exception as exc:  # a worker that will not start: say so, keep the stack
            say(f"failed: {exc}")
        finally:
            self._busy.release()
        return True

    def _roll(self, say: Say) -> None:
        old = [p for p in list(self.stack.procs) if p.kind == "worker" and p.alive()]
        before = self._fleet()
        say(f"rolling {len(old)} worker{'s' if len(old) != 1 else ''}: start a new one, "
            "then SIGTERM an old one "
            "(it drains: its sockets re-home onto the others)")
        for proc in old:
            new = self.start_worker()
            owned = _sockets(self._fleet(), proc.fleet_name)
            say(f"{new.fleet_name} ready (pid {new.pid}); SIGTERM to {proc.fleet_name} "
                f"(pid {proc.pid}, {owned} sockets)")
            started = time.monotonic()
            code = self.stack.retire(proc, DRAIN_WAIT)
            say(f"{proc.fleet_name} drained and exited ({code}) in "
                f"{time.monotonic() - started:.1f} s")
        time.sleep(STATUS_SETTLE)  # the last re-homes reach the interfaces' next heartbeat
        say("done: " + _summary(before, self._fleet()))

    def _fleet(self) -> dict[str, Any] | None:
        reader = FleetStatus(self.stack.env["CHANNELS_FLEET_REDIS_URL"])
        try:
            return reader.read()
        except Exception:
            return None
        finally:
            reader.close()


def _sockets(fleet: dict[str, Any] | None, name: str) -> str:
    procs = [p for p in (fleet or {}).get("processes", []) if p["name"] == name]
    return str(procs[0]["sockets"]) if procs else "?"


def _totals(fleet: dict[str, Any], what: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for proc in fleet["processes"]:
        if proc["kind"] == "interface":
            for key, n in (proc.get(what) or {}).items():
                out[key] = out.get(key, 0) + n
    return out


def _summary(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """What the interfaces counted during the roll (the same interfaces before and after)."""
    workers = ", ".join(p["name"] for p in (after or {}).get("processes", [])
                        if p["kind"] == "worker")
    if before is None or after is None:
        return f"workers now {workers or '?'} (fleet status unreadable: no counts)"
    counts = {}
    for what in ("rehomes", "closes"):
        was = _totals(before, what)
        counts[what] = {k: n - was.get(k, 0) for k, n in _totals(after, what).items()
                        if n - was.get(k, 0)}
    closes = ", ".join(f"{n} x {code}" for code, n in sorted(counts["closes"].items()))
    return (f"workers now {workers}; {sum(counts['rehomes'].values())} sockets re-homed, "
            f"{sum(counts['closes'].values())} closed ({closes or 'no disconnects'})")


class RollControl:
    """``make run``'s control socket: each connection that sends ``roll-workers`` gets the
    roll's steps, one line each. A client may hang up early; the roll goes on."""

    def __init__(self, path: Path, roll: WorkerRoll) -> None:
        self.path = path
        roll_ = roll

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                if self.rfile.readline(64) != ROLL:
                    self._say("unknown request: send roll-workers")
                    return
                roll_.run(self._say)

            def _say(self, line: str) -> None:
                with contextlib.suppress(OSError):
                    self.wfile.write(line.encode() + b"\n")
                    self.wfile.flush()

        self.path.unlink(missing_ok=True)
        old_umask = os.umask(0o077)  # the socket file: its owner only
        try:
            self.server = socketserver.ThreadingUnixStreamServer(str(path), Handler)
        finally:
            os.umask(old_umask)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        name="roll-control", daemon=True)

    def start(self) -> RollControl:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.path.unlink(missing_ok=True)


def request_roll(path: Path, say: Say, *, first_line_only: bool = False,
                 timeout: float = 300) -> bool:
    """Ask ``make run`` (its control socket ``path``) to roll the workers; ``say`` each line.
    True when the roll finished (or, with ``first_line_only``, started)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(ROLL)
            last = ""
            for raw in sock.makefile("rb"):
                last = raw.decode().rstrip("\n")
                say(last)
                if first_line_only:
                    return last.startswith("rolling")
            return last.startswith("done")
    except OSError as exc:
        say(f"no `make run` stack answers on {path} ({exc.strerror or exc}): start one with "
            "`make run`")
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python examples/chat/fleetview/roll.py",
                                     description="Roll the workers of `make run`.")
    parser.add_argument("--dir", default=".run", type=Path, help="make run's --dir (.run)")
    args = parser.parse_args(argv)
    done = request_roll(args.dir / SOCKET_NAME, lambda line: print(line, flush=True))
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
