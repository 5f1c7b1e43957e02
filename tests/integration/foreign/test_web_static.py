"""Under DEBUG the project's static files are served as ``runserver`` serves them: by the web
tier and through the interfaces (the worker's app); with DEBUG off, by neither."""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from foreignstack import PROJECT, pythonpath
from support.sites import Site

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CSS = (PROJECT / "chat" / "static" / "chat" / "room.css").read_bytes()


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize(("debug", "served"), [("1", True), ("0", False)])
def test_static_files_served_only_under_debug(
        tmp_path: Path, redis_single: LocalRedis, debug: str, served: bool) -> None:
    env = {**os.environ, "PYTHONPATH": pythonpath(), "DJANGO_SETTINGS_MODULE": "mysite.settings",
           "SQLITE_PATH": str(tmp_path / "db.sqlite3"), "DJANGO_DEBUG": debug,
           "REDIS_HOST": "127.0.0.1", "REDIS_PORT": redis_single.urls[0].rsplit(":", 1)[1],
           "CHANNELS_FLEET_REDIS_URL": redis_single.urls[0]}
    stack = Site(env, tmp_path)
    try:
        web = stack.start("web", "mysite.wsgi:application")
        interface = stack.start("interface")
        stack.start("worker", "mysite.asgi:application")
        stack.wait_ready()
        answers = [get(port, "/static/chat/room.css") for port in (web, interface)]
    finally:
        stack.stop()
    if served:
        assert answers == [(200, CSS), (200, CSS)]
    else:  # production: collectstatic behind WhiteNoise, a CDN or the Ingress
        assert [status for status, _ in answers] == [404, 404]
