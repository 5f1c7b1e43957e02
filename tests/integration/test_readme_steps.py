"""The README's "Your own project" steps, run as written: several interfaces, several workers and
the web tier on one host, with no setting beyond the README's.

The block of commands is read from README.md, so the test follows the README. Only the public
ports are changed (to free ones: 8000-8002 may be taken here); every other word of each line is
run as it is, from the directory holding the project's ``manage.py``
(``tests/integration/readme``: ``myproject``, an ordinary small Channels project), with
``DJANGO_SETTINGS_MODULE`` and ``CHANNELS_FLEET_REDIS_URL`` set as the README says.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports
from channels_fleet.process import die_with_parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DIR = Path(__file__).resolve().parent / "readme"
PROBES = re.compile(r"probes and metrics on http://[\d.]+:(\d+)")


def readme_steps() -> list[str]:
    """The command lines of the first code block under "## Your own project"."""
    section = (ROOT / "README.md").read_text().split("\n## Your own project\n", 1)[1]
    block = section.split("```\n", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def free_pair() -> int:
    """A free port whose + 1000 (where its probes go) is free too."""
    for _ in range(200):
        port = free_ports(1)[0]
        if all(_free(p) for p in (port, port + 1000)):
            return port
    raise RuntimeError("no free port pair")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
            return True
        except OSError:
            return False


class Step:
    def __init__(self, line: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.line, self.args, self.log = line, args, log
        with open(log, "wb") as out:
            self.popen = subprocess.Popen(args, cwd=PROJECT_DIR, env=env, stdout=out,
                                          stderr=subprocess.STDOUT,
                                          preexec_fn=die_with_parent)

    @property
    def kind(self) -> str:
        return self.args[1]

    def port(self) -> int | None:
        return int(self.args[self.args.index("--port") + 1]) if "--port" in self.args else None

    def probe_port(self) -> int | None:
        found = PROBES.search(self.log.read_text(errors="replace"))
        return int(found.group(1)) if found else None

    def ready(self) -> bool:
        port = self.probe_port()
        if port is None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


@pytest.fixture
def steps(redis_single: LocalRedis, tmp_path: Path) -> Iterator[list[Step]]:
    lines = readme_steps()
    ports = {old: str(free_pair()) for line in lines
             for old in re.findall(r"--port (\d+)", line)}
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "myproject.settings",
           "CHANNELS_FLEET_REDIS_URL": redis_single.urls[0],
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env = {k: v for k, v in env.items() if not k.startswith("CHANNELS_FLEET_")
           or k == "CHANNELS_FLEET_REDIS_URL"}
    started = []
    try:
        for i, line in enumerate(lines):
            args = [ports.get(word, word) if prev == "--port" else word
                    for prev, word in zip(["", *shlex.split(line)], shlex.split(line),
                                          strict=False)]
            started.append(Step(line, args, tmp_path / f"step-{i}.log", env))
        yield started
    finally:
        for step in started:
            step.popen.kill()
            step.popen.wait()


async def test_readme_own_project_steps__side_by_side_on_one_host(steps: list[Step]) -> None:
    kinds = [step.kind for step in steps]
    assert kinds.count("interface") >= 2 and kinds.count("worker") >= 2 and "web" in kinds
    deadline = time.monotonic() + 60
    while not all(step.ready() for step in steps):
        for step in steps:
            assert step.popen.poll() is None, f"{step.line!r} exited:\n{step.log.read_text()}"
        assert time.monotonic() < deadline, [s.log.read_text()[-2000:] for s in steps]
        await asyncio.sleep(0.2)
    probe_ports = [step.probe_port() for step in steps]
    assert len(set(probe_ports)) == len(steps)  # each its own, with no setting
    for step in steps:
        if step.kind in ("interface", "web"):
            assert step.probe_port() == step.port() + 1000  # type: ignore[operator]
    assert sorted(p for s, p in zip(steps, probe_ports, strict=True) if s.kind == "worker")[0] >= 9100

    # Pages from the web tier and through an interface (relayed to a worker's ASGI app).
    for step in steps:
        if step.kind in ("web", "interface"):
            with urllib.request.urlopen(f"http://127.0.0.1:{step.port()}/hello/",
                                        timeout=20) as resp:
                assert resp.read().startswith(b"hello from ")
    # A room spanning the interfaces (and so, most likely, the workers): one message reaches
    # every socket.
    interfaces = [step.port() for step in steps if step.kind == "interface"]
    socks = [await connect(f"ws://127.0.0.1:{port}/ws/chat/", open_timeout=20,
                           origin=f"http://127.0.0.1:{port}") for port in interfaces * 3]
    try:
        await socks[0].send("hi all")
        got = [await asyncio.wait_for(sock.recv(), 10) for sock in socks]
        assert all(str(text).endswith(":hi all") for text in got)
    finally:
        for sock in socks:
            await sock.close()
    for step in steps:
        assert step.popen.poll() is None, step.line
        assert "could not start" not in step.log.read_text()
