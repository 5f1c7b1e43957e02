"""Roll the workers or the interfaces of ``make run`` one by one, as a rolling update does.

Workers (:class:`WorkerRoll`): for each, start a new one and wait until it is ready, then
SIGTERM the old one; its drain hands every WebSocket back and the interfaces re-home them onto
the others, so no client socket closes.

Interfaces (:class:`InterfaceRoll`): a browser's page talks to one fixed interface port, so
each port stays served: SIGTERM the old interface (it stops listening at once and sends its
resumable sessions ``B``: their FleetSocket comes straight back and resumes), start a new one
on the same port as soon as the old has let go of it, then wait for the old one's drain (it
ends once every session has resumed on the new one).

``make run`` listens for roll requests on a Unix socket (``.run/devstack.sock``, owner only):

    make roll-workers                  # python examples/chat/fleetview/roll.py --dir .run
    make roll-interfaces               # ... roll.py --interfaces --dir .run
    # or the "Roll the workers" button on the demo's /fleet/ page (staff only)

Each step is reported as one line; the last gives the counts of the roll: for workers how
many sockets were re-homed and how many closed (by code), from the fleet's own status
(``channels_fleet.fleet``); for interfaces how many sessions resumed and sockets closed (by
code), from each interface's own counters (``/metrics``: a rolled interface leaves the fleet's
status, and with it its counts).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from channels_fleet.fleet import FleetStatus

SOCKET_NAME = "devstack.sock"
ROLL = b"roll-workers\n"
ROLL_INTERFACES = b"roll-interfaces\n"
DRAIN_WAIT = 40.0  # a worker's drain takes up to CHANNELS_FLEET_DRAIN_TIMEOUT (25 s)
STATUS_SETTLE = 1.5  # a heartbeat's status is up to one interval (1 s) old

Say = Callable[[str], None]


class Roll:
    """One kind of roll of ``stack`` (a ``channels_fleet.dev.stack.FleetStack``); one roll of
    any kind at a time (``busy``: shared by the rolls of one stack)."""

    def __init__(self, stack: Any, busy: threading.Lock | None = None) -> None:
        self.stack = stack
        self._busy = busy if busy is not None else threading.Lock()

    def run(self, say: Say) -> bool:
        """Roll, reporting each step to ``say``; False if a roll is running."""
        if not self._busy.acquire(blocking=False):
            say("busy: a roll is already running")
            return False
        try:
            self._roll(say)
        except Exception as exc:  # a process that will not start: say so, keep the stack
            say(f"failed: {exc}")
        finally:
            self._busy.release()
        return True

    def _roll(self, say: Say) -> None:
        raise NotImplementedError

    def _fleet(self) -> dict[str, Any] | None:
        reader = FleetStatus(self.stack.env["CHANNELS_FLEET_REDIS_URL"])
        try:
            return reader.read()
        except Exception:
            return None
        finally:
            reader.close()


class WorkerRoll(Roll):
    """Rolls the running workers; ``start_worker()`` starts one more and returns its
    ``ServiceProcess`` once ready."""

    def __init__(self, stack: Any, start_worker: Callable[[], Any],
                 busy: threading.Lock | None = None) -> None:
        super().__init__(stack, busy)
        self.start_worker = start_worker

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


class InterfaceRoll(Roll):
    """Rolls the running interfaces, each port kept served (module doc);
    ``start_interface(port)`` starts one on ``port`` and returns it once ready."""

    def __init__(self, stack: Any, start_interface: Callable[[int], Any],
                 busy: threading.Lock | None = None) -> None:
        super().__init__(stack, busy)
        self.start_interface = start_interface

    def _roll(self, say: Say) -> None:
        old = [p for p in list(self.stack.procs) if p.kind == "interface" and p.alive()]
        counts = {proc.fleet_name: Counts.read(proc) for proc in old}
        say(f"rolling {len(old)} interface{'s' if len(old) != 1 else ''}: SIGTERM one (its "
            "sessions get B and resume at once), then a new one on its port")
        gone: list[Counts] = []
        for proc in old:
            sockets = _sockets(self._fleet(), proc.fleet_name)
            say(f"SIGTERM to {proc.fleet_name} (pid {proc.pid}, port {proc.port}, "
                f"{sockets} sockets)")
            started = time.monotonic()
            watch = Watch(proc, counts[proc.fleet_name])
            proc.signal(signal.SIGTERM)
            _port_released(proc.port)
            new = self.start_interface(proc.port)
            say(f"{new.fleet_name} ready on port {proc.port} (pid {new.pid}) after "
                f"{time.monotonic() - started:.1f} s")
            code = self.stack.retire(proc, DRAIN_WAIT)
            gone.append(watch.last())
            say(f"{proc.fleet_name} drained and exited ({code}) in "
                f"{time.monotonic() - started:.1f} s")
        now = [p for p in self.stack.procs if p.kind == "interface" and p.alive()]
        total = Counts()
        for counted in gone:
            total.add(counted)
        for proc in now:
            total.add(Counts.read(proc).minus(counts.get(proc.fleet_name)))
        closes = ", ".join(f"{n} x {code}" for code, n in sorted(total.closes.items()))
        say(f"done: interfaces now {', '.join(p.fleet_name for p in now)}; {total.resumed} "
            f"sessions resumed, {sum(total.closes.values())} sockets closed "
            f"({closes or 'no disconnects'})")


_COUNTER = re.compile(r'^channels_fleet_(sessions_resumed|closes)_total(?:\{code="(\w+)"\})? '
                      r"([0-9.e+]+)$", re.MULTILINE)


class Counts:
    """An interface's resumed sessions and closes (by code), from its ``/metrics``."""

    def __init__(self, resumed: int = 0, closes: dict[str, int] | None = None) -> None:
        self.resumed = resumed
        self.closes = closes or {}

    @classmethod
    def read(cls, proc: Any) -> Counts:
        """``proc``'s counts now; OSError if it does not answer."""
        url = f"http://127.0.0.1:{proc.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            text = resp.read().decode()
        counts = cls()
        for name, code, value in _COUNTER.findall(text):
            if name == "closes":
                counts.closes[code] = int(float(value))
            else:
                counts.resumed = int(float(value))
        return counts

    def minus(self, before: Counts | None) -> Counts:
        if before is None:
            return self
        return Counts(self.resumed - before.resumed,
                      {k: n - before.closes.get(k, 0) for k, n in self.closes.items()})

    def add(self, other: Counts) -> None:
        self.resumed += other.resumed
        for code, n in other.closes.items():
            if n:
                self.closes[code] = self.closes.get(code, 0) + n


class Watch:
    """Reads a draining interface's counts until it stops answering: its drain's closes are
    counted up to its exit, which takes them out of the fleet's status."""

    def __init__(self, proc: Any, before: Counts) -> None:
        self.proc, self.before, self.seen = proc, before, before
        self._thread = threading.Thread(target=self._run, name="roll-watch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.seen = Counts.read(self.proc)
            except OSError:
                return  # its probes stopped: it is exiting
            time.sleep(0.05)

    def last(self) -> Counts:
        """What it counted during the roll (call once it exited)."""
        self._thread.join(5)
        return self.seen.minus(self.before)


def _port_released(port: int, timeout: float = 10) -> None:
    """Wait until nothing listens on ``port`` (a draining interface stops listening first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"port {port} still served {timeout:g} s after SIGTERM")


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
    """``make run``'s control socket: each connection that sends ``roll-workers`` (or, given
    an ``interfaces`` roll, ``roll-interfaces``) gets the roll's steps, one line each. A client
    may hang up early; the roll goes on."""

    def __init__(self, path: Path, roll: WorkerRoll,
                 interfaces: InterfaceRoll | None = None) -> None:
        self.path = path
        rolls: dict[bytes, Roll] = {ROLL: roll}
        if interfaces is not None:
            rolls[ROLL_INTERFACES] = interfaces
        known = " or ".join(r.decode().strip() for r in rolls)

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                asked = rolls.get(self.rfile.readline(64))
                if asked is None:
                    self._say(f"unknown request: send {known}")
                    return
                asked.run(self._say)

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
                 timeout: float = 300, request: bytes = ROLL) -> bool:
    """Ask ``make run`` (its control socket ``path``) to roll the workers (``request``
    ``ROLL_INTERFACES``: the interfaces); ``say`` each line. True when the roll finished (or,
    with ``first_line_only``, started)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(path))
            sock.sendall(request)
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
    parser.add_argument("--interfaces", action="store_true",
                        help="roll the interfaces instead (each port kept served)")
    args = parser.parse_args(argv)
    done = request_roll(args.dir / SOCKET_NAME, lambda line: print(line, flush=True),
                        request=ROLL_INTERFACES if args.interfaces else ROLL)
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main())
