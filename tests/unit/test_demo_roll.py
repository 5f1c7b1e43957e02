"""make run's roll control socket: one roll at a time, every step reported, a clear answer
when no stack listens. (The roll of real workers: tests/browser.)"""

from __future__ import annotations

import socket
import sys
import threading
from pathlib import Path
from typing import Any

# The roll is the demo's own (examples/chat/fleetview/roll.py), as `make roll-workers` runs it.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "chat"))
from fleetview.roll import RollControl, WorkerRoll, request_roll  # noqa: E402


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
