"""The web tier serves the project's static files under DEBUG, as ``runserver`` does."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from featurestack import Stack
from foreignstack import PROJECT

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CSS = (PROJECT / "chat" / "static" / "chat" / "room.css").read_bytes()


def web_only(tmp: Path, debug: str) -> Stack:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "DJANGO_SETTINGS_MODULE": "mysite.settings",
           "SQLITE_PATH": str(tmp / "db.sqlite3"), "DJANGO_DEBUG": debug,
           "CHANNELS_FLEET_ADOPT_LAYERS": "off"}  # no Redis needed to serve pages
    stack = Stack(env, tmp)
    stack.web = stack.start("web", "mysite.wsgi:application")
    stack.wait_ready()
    return stack


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(("debug", "served"), [("1", True), ("0", False)])
def test_static_files_served_only_under_debug(
        tmp_path: Path, debug: str, served: bool) -> None:
    stack = web_only(tmp_path, debug)
    try:
        status, body = get(stack.web, "/static/chat/room.css")
    finally:
        stack.stop()
    if served:
        assert (status, body) == (200, CSS)
    else:
        assert status == 404  # production: collectstatic behind WhiteNoise, a CDN or the Ingress
