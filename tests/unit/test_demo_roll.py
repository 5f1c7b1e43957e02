"""make run's roll control socket: one roll at a time, every step reported, a clear answer
when no stack listens; the interface roll's steps and counts. (The rolls of real workers and
interfaces: tests/browser.)"""

from __future__ import annotations

import http.server
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

# The roll is the demo's own (examples/chat/fleetview/roll.py), as `make roll-workers` runs it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "chat"))
from fleetview.roll import (  # noqa: E402
    ROLL_INTERFACES,
    InterfaceRoll,
    RollControl,
    WorkerRoll,
    request_roll,
)


class Proc:
    def __init__(self, name: str, pid: int) -> None:
        self.kind, self.fleet_name, self.pid = "worker", name, pid

    def alive(self) -> bool:
        return True


class Stack:
    """What WorkerRoll uses of a FleetStack; retiring waits for ``release``."""

    def __init__(self) -> None:
        self.procs: list[Any] = [Proc("w1", 101)]
        self.env = {"CHANNELS_FLEET_REDIS_URL": "redis://127.0.0.1:1"}  # nothing listens
        self.release = threading.Event()

    def retire(self, proc: Any, timeout: float) -> int:
        self.release.wait(10)
        self.procs.remove(proc)
        return 0


def test_roll__steps_reported__a_second_roll_meanwhile_is_refused(tmp_path: Path) -> None:
    stack = Stack()
    control = RollControl(tmp_path / "devstack.sock",
                          WorkerRoll(stack, lambda: Proc("w2", 102))).start()
    try:
        lines: list[str] = []
        first = threading.Thread(target=request_roll, args=(control.path, lines.append))
        first.start()
        started: list[str] = []
        while not lines:
            threading.Event().wait(0.01)
        assert request_roll(control.path, started.append, first_line_only=True) is False
        assert started == ["busy: a roll is already running"]
        stack.release.set()
        first.join(10)
        assert lines[0].startswith("rolling 1 worker: start a new one")
        assert lines[1] == "w2 ready (pid 102); SIGTERM to w1 (pid 101, ? sockets)"
        assert lines[2].startswith("w1 drained and exited (0) in ")
        assert lines[3] == "done: workers now ? (fleet status unreadable: no counts)"
        assert (control.path.stat().st_mode & 0o777) == 0o700  # owner only
    finally:
        control.stop()
    assert not control.path.exists()


def test_unknown_request_and_no_stack(tmp_path: Path) -> None:
    control = RollControl(tmp_path / "devstack.sock", WorkerRoll(Stack(), lambda: None)).start()
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(control.path))
            sock.sendall(b"rm -rf\n")
            assert sock.makefile("rb").readline() == b"unknown request: send roll-workers\n"
    finally:
        control.stop()
    said: list[str] = []
    assert request_roll(tmp_path / "devstack.sock", said.append) is False
    assert said[0].startswith(f"no `make run` stack answers on {tmp_path}/devstack.sock")
    assert said[0].endswith("start one with `make run`")


class Metrics(http.server.ThreadingHTTPServer):
    """A process's /metrics, with the two counters the interface roll reads."""

    def __init__(self, resumed: int, closes: dict[str, int]) -> None:
        self.text = ""
        self.set(resumed, closes)
        metrics = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = metrics.text.encode()
                self.send_response(200)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def set(self, resumed: int, closes: dict[str, int]) -> None:
        lines = ["# TYPE channels_fleet_sessions_resumed_total counter",
                 f"channels_fleet_sessions_resumed_total {resumed:.1f}"]
        lines += [f'channels_fleet_closes_total{{code="{code}"}} {n:.1f}'
                  for code, n in closes.items()]
        self.text = "\n".join(lines) + "\n"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class Interface:
    """What InterfaceRoll uses of a ServiceProcess: its ports, name, pid and a SIGTERM."""

    def __init__(self, name: str, pid: int, port: int, metrics: Metrics) -> None:
        self.kind, self.fleet_name, self.pid, self.port = "interface", name, pid, port
        self.metrics = metrics
        self.metrics_port = metrics.server_address[1]
        self.signals: list[int] = []

    def alive(self) -> bool:
        return True

    def signal(self, sig: int) -> None:
        self.signals.append(sig)


def test_interface_roll__each_port_served_again__resumed_and_closed_counted(
        tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: "released" at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    old = Interface("i1", 101, port, Metrics(2, {"1000": 5}))
    stack = Stack()
    stack.procs = [old]
    started: list[int] = []

    def start_interface(at: int) -> Interface:
        started.append(at)
        return Interface("i3", 103, at, Metrics(3, {}))  # the resumed sessions came here

    def retire(proc: Any, timeout: float) -> int:
        assert proc.signals == [signal.SIGTERM] and started == [port]
        proc.metrics.set(2, {"1000": 5, "1001": 1})  # its drain closed a plain socket
        time.sleep(0.3)  # the roll watches its counts until it stops answering
        proc.metrics.stop()
        stack.procs.remove(proc)
        stack.procs.append(new)
        return 0

    new = start_interface(port)
    started.clear()
    stack.retire = retire  # type: ignore[method-assign]
    lines: list[str] = []
    try:
        assert InterfaceRoll(stack, start_interface).run(lines.append)
    finally:
        new.metrics.stop()
    assert lines[0] == ("rolling 1 interface: SIGTERM one (its sessions get B and resume at "
                        "once), then a new one on its port")
    assert lines[1] == f"SIGTERM to i1 (pid 101, port {port}, ? sockets)"
    assert lines[2].startswith(f"i3 ready on port {port} (pid 103) after ")
    assert lines[3].startswith("i1 drained and exited (0) in ")
    assert lines[4] == ("done: interfaces now i3; 3 sessions resumed, 1 sockets closed "
                        "(1 x 1001)")


def test_control_socket__roll_interfaces_request(tmp_path: Path) -> None:
    class Said(InterfaceRoll):
        def _roll(self, say: Any) -> None:
            say("rolling interfaces")
            say("done: interfaces")

    busy = threading.Lock()
    control = RollControl(tmp_path / "devstack.sock", WorkerRoll(Stack(), lambda: None, busy),
                          Said(Stack(), lambda port: None, busy)).start()
    try:
        said: list[str] = []
        assert request_roll(control.path, said.append, request=ROLL_INTERFACES)
        assert said == ["rolling interfaces", "done: interfaces"]
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(control.path))
            sock.sendall(b"roll-everything\n")
            assert sock.makefile("rb").readline() == (
                b"unknown request: send roll-workers or roll-interfaces\n")
        with busy:  # a worker roll running: an interface roll waits its turn
            said.clear()
            assert request_roll(control.path, said.append, request=ROLL_INTERFACES) is False
            assert said == ["busy: a roll is already running"]
    finally:
        control.stop()
