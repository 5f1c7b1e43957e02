"""``channels-fleet dev``: the split in one command; a saved file reloads the workers while an open
WebSocket stays open and then answers from the new code; Ctrl-C stops everything it started.

The project is written to a temporary directory (the test edits it): a view, a static file
served with DEBUG, and a consumer answering the version in ``devproj/version.py``.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from channels_fleet.dev.ports import free_ports
from channels_fleet.process import die_with_parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CLI = [sys.executable, "-m", "channels_fleet.cli"]

FILES = {
    "manage.py": "",
    "devproj/__init__.py": "",
    "devproj/version.py": 'VERSION = "v1"\n',
    "devproj/static/devproj/app.css": "body { color: teal; }\n",
    "devproj/settings.py": '''
SECRET_KEY = "dev-tests-only"
DEBUG = True
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "channels", "devproj"]
ROOT_URLCONF = "devproj.urls"
STATIC_URL = "static/"
DATABASES = {}
USE_TZ = True
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
''',
    "devproj/urls.py": '''
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("hello/", lambda request: HttpResponse("hello from a view"))]
''',
    "devproj/asgi.py": '''
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "devproj.settings")
django_asgi_app = get_asgi_application()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from devproj.version import VERSION  # noqa: E402


class VersionConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(f"{VERSION} {text_data}")


application = ProtocolTypeRouter({
    "http": django_asgi_app,
    "websocket": URLRouter([path("ws/version/", VersionConsumer.as_asgi())]),
})
''',
}


class Dev:
    def __init__(self, popen: subprocess.Popen[str], port: int, out: Path, tmp: Path) -> None:
        self.popen, self.port, self.out, self.tmp = popen, port, out, tmp

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.popen.poll() is None, f"dev exited {self.popen.returncode}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {text!r} in:\n{self.output()}"
            time.sleep(0.1)

    def children(self) -> list[int]:
        """Its child processes, whichever of its threads started them."""
        tasks = Path(f"/proc/{self.popen.pid}/task").iterdir()
        return [int(pid) for task in tasks for pid in (task / "children").read_text().split()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.lstrip("\n"))
    return root


def start_dev(project: Path, tmp_path: Path, **env: str) -> Dev:
    (port,) = free_ports(1)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    out = tmp_path / "dev.out"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CHANNELS_FLEET_")}
    environ.update(TMPDIR=str(tmp_path / "tmp"), **env)
    with open(out, "w") as sink:
        popen = subprocess.Popen(
            [*CLI, "dev", "devproj.asgi:application", "--port", str(port), "--workers", "2"],
            cwd=project, env=environ, stdout=sink, stderr=subprocess.STDOUT, text=True,
            preexec_fn=die_with_parent)
    return Dev(popen, port, out, tmp_path / "tmp")


@pytest.fixture
def dev(project: Path, tmp_path: Path) -> Iterator[Dev]:
    running = start_dev(project, tmp_path)
    try:
        yield running
    finally:
        if running.popen.poll() is None:
            running.popen.kill()
            running.popen.wait()


def get(port: int, path: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=20) as resp:
        return resp.status, resp.read()


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_dev__one_port_reload_keeps_sockets_open_ctrl_c_stops_all(
        dev: Dev, project: Path) -> None:
    dev.wait_for("Ctrl-C stops everything")
    banner = dev.output()
    assert f"channels-fleet dev: http://127.0.0.1:{dev.port}/" in banner
    redis_port = int(re.search(r"private redis-server at redis://127.0.0.1:(\d+)", banner)[1])

    # Views and static files (DEBUG) on the interface's port, relayed to the workers.
    assert get(dev.port, "/hello/") == (200, b"hello from a view")
    assert get(dev.port, "/static/devproj/app.css") == (200, b"body { color: teal; }\n")

    async with connect(f"ws://127.0.0.1:{dev.port}/ws/version/", open_timeout=20) as sock:
        await sock.send("0")
        assert await asyncio.wait_for(sock.recv(), 10) == "v1 0"
        # Save new code; ask again and again on the same socket until the new code answers.
        saved = time.monotonic()
        (project / "devproj" / "version.py").write_text('VERSION = "v2"\n')
        answers: list[str] = []
        i = 0
        while not answers or not answers[-1].startswith("v2"):
            assert time.monotonic() - saved < 90, answers[-5:]
            i += 1
            await sock.send(str(i))
            try:
                answers.append(str(await asyncio.wait_for(sock.recv(), 0.1)))
            except TimeoutError:
                pass
        took = time.monotonic() - saved
        print(f"\ndev reload: saved file -> new code answering on the open socket: {took:.2f} s")
        # The same socket, never closed: every answer came, in order, old code then new.
        await sock.send("after")
        while (last := str(await asyncio.wait_for(sock.recv(), 10))) != "v2 after":
            answers.append(last)
        numbers = [int(a.split()[1]) for a in answers]
        assert numbers == sorted(numbers)
        assert {a.split()[0] for a in answers} == {"v1", "v2"}
    assert "devproj/version.py changed: reloading the workers" in dev.output()
    assert "workers reloaded in" in dev.output()

    # Ctrl-C: everything it started stops, the private Redis and its files included.
    children = dev.children()
    assert len(children) >= 3  # redis, interface, workers
    dev.popen.send_signal(signal.SIGINT)
    assert dev.popen.wait(30) == 0
    assert dev.output().rstrip().endswith("channels-fleet dev: stopped")
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(
            f"/proc/{pid}/status").read_text()
    assert not listening(dev.port) and not listening(redis_port)
    assert list(dev.tmp.iterdir()) == []


async def test_dev__broken_new_code_keeps_the_old_workers(dev: Dev, project: Path) -> None:
    dev.wait_for("Ctrl-C stops everything")
    async with connect(f"ws://127.0.0.1:{dev.port}/ws/version/", open_timeout=20) as sock:
        (project / "devproj" / "version.py").write_text('VERSION = "v2\n')  # a syntax error
        dev.wait_for("the new code does not start")
        await sock.send("still")
        assert await asyncio.wait_for(sock.recv(), 10) == "v1 still"
    assert "SyntaxError" in dev.output()


def test_dev__no_redis_server_installed__says_so(project: Path, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    dev = start_dev(project, tmp_path, PATH=str(empty))
    assert dev.popen.wait(30) == 1
    assert ("channels-fleet dev: could not start: CHANNELS_FLEET_REDIS_URL is not set, and no "
            "redis-server (or valkey-server) is on PATH to start a private one: install it "
            "(Debian/Ubuntu: apt install redis-server; macOS: brew install redis) or set "
            "CHANNELS_FLEET_REDIS_URL") in dev.output()
    assert list(dev.tmp.iterdir()) == []
