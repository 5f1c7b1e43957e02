"""The web tier's probes and drain, on a real `channels-fleet web` (gunicorn) process.

/readyz follows the project's database (the chart's readiness probe: a web pod whose database
is gone leaves the Service); SIGTERM gives running requests CHANNELS_FLEET_DRAIN_TIMEOUT seconds
(gunicorn's graceful timeout), not a fixed 25.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from livestack import ROOT, WEBAPP, LiveStack

pytestmark = pytest.mark.timeout(90)

CHAT = ROOT / "examples" / "chat"


def readyz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def chat_web(stack: LiveStack, database_url: str, **env: str):
    """The web tier with the demo chat's settings (its DATABASE_URL), serving a tiny WSGI app."""
    path = os.pathsep.join([str(CHAT), str(WEBAPP), str(ROOT / "src"), str(ROOT)])
    return stack.web("web-0", PYTHONPATH=path, DJANGO_SETTINGS_MODULE="chat_project.settings",
                     DATABASE_URL=database_url, **env)


def wait_probe(port: int, status: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    seen: tuple[int, str] | None = None
    while time.monotonic() < deadline:
        try:
            seen = readyz(port)
        except OSError:
            seen = None
        if seen and seen[0] == status:
            return seen[1]
        time.sleep(0.2)
    raise AssertionError(f"/readyz never answered {status}; last {seen}")


def test_readyz_follows_the_database(tmp_path):
    stack = LiveStack([], tmp_path)
    try:
        web = chat_web(stack, f"sqlite:///{tmp_path / 'chat.sqlite3'}")
        assert wait_probe(web.metrics_port, 200).strip() == "ok"
    finally:
        stack.stop()


def test_readyz_says_the_database_is_unreachable(tmp_path):
    stack = LiveStack([], tmp_path)
    try:
        web = chat_web(stack, "sqlite:////nonexistent-dir/chat.sqlite3")
        body = wait_probe(web.metrics_port, 503)
        print("web /readyz without its database:", body.strip())
        assert body.strip() == "database unreachable: OperationalError"
        # Alive all the same: liveness must not restart a pod for its database.
        with urllib.request.urlopen(f"http://127.0.0.1:{web.metrics_port}/healthz") as resp:
            assert resp.status == 200
    finally:
        stack.stop()


@pytest.mark.parametrize("drain", [1, 6])
def test_sigterm_gives_requests_the_drain_timeout(tmp_path, drain):
    stack = LiveStack([], tmp_path)
    try:
        web = chat_web(stack, f"sqlite:///{tmp_path / 'chat.sqlite3'}",
                       CHANNELS_FLEET_DRAIN_TIMEOUT=str(drain))
        wait_probe(web.metrics_port, 200)
        outcome: list[object] = []

        def slow_request() -> None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{web.port}/sleep?30", timeout=40).close()
                outcome.append("answered")
            except OSError as exc:  # the worker was stopped when the drain ran out
                outcome.append(exc)

        request = threading.Thread(target=slow_request, daemon=True)
        request.start()
        time.sleep(1)  # the request is running in a worker
        t0 = time.monotonic()
        web.signal(signal.SIGTERM)
        web.popen.wait(timeout=30)
        took = time.monotonic() - t0
        request.join(10)
        print(f"drain {drain} s: gunicorn exited {took:.1f} s after SIGTERM; "
              f"the 30 s request: {outcome}")
        assert drain - 0.5 <= took < drain + 4, took
        assert outcome and outcome[0] != "answered"
    finally:
        stack.stop()
