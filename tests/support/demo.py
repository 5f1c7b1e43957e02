"""The demo chat (examples/chat) as real processes on the session Redis Cluster: interface,
web tier (gunicorn) and a worker serving the ``moderation`` background channel; and a login
made the way a browser makes it, on the web tier's form."""

from __future__ import annotations

import http.cookiejar
import os
import re
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

from channels_fleet.dev.resume_key import resume_key

from .sites import Site

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "chat"
PASSWORD = "demo-password"


#: How the demo's workers run: the project's ASGI app, plus the "moderation" channel.
WORKER = ("chat_project.asgi:application", "--channels", "moderation")


def demo_stack(urls: list[str], tmp: Path, poll_timeout: float = 2.0, workers: int = 1,
               interfaces: int = 1, **env: str) -> Iterator[Site]:
    """The demo on ``urls``: ``interfaces`` interfaces (named ``i1``, ``i2`` ... in the fleet's
    status; ports in ``site.ports``, the first also ``site.port``), the web tier and
    ``workers`` workers (``w1`` ...); ``env`` is added to every process's. As in ``make run``,
    the interfaces share a resume key (the pages' FleetSocket resumes on either)."""
    # The test's own PYTHONPATH too (absolute), so the processes run the same channels_fleet.
    path = [str(PROJECT), *(os.path.abspath(p) for p in
                            os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path), "CHAT_RUN_DIR": str(tmp),
           "DJANGO_SETTINGS_MODULE": "chat_project.settings", "CHAT_MODERATION": "1",
           "CHAT_POLL_TIMEOUT": str(poll_timeout),
           "CHANNELS_FLEET_REDIS_URL": ",".join(urls[:3]), **env}
    site = Site(env, tmp)
    for command in (["migrate", "-v", "0"], ["demo_users"]):
        site.stack.run(sys.executable, str(PROJECT / "manage.py"), *command, timeout=60)
    try:
        key = resume_key(tmp)
        site.ports = [site.start("interface", CHANNELS_FLEET_NAME=f"i{n}",
                                 CHANNELS_FLEET_RESUME_KEY=key)
                      for n in range(1, interfaces + 1)]
        site.port = site.ports[0]
        site.web = site.start("web", "chat_project.wsgi:application")
        for n in range(1, workers + 1):
            site.start("worker", *WORKER, CHANNELS_FLEET_NAME=f"w{n}")
        site.wait_ready()
        yield site
    finally:
        site.stop()


class Browserish:
    """A cookie jar and the web tier's login form, as a browser would use them."""

    def __init__(self, web_port: int) -> None:
        self.base = f"http://127.0.0.1:{web_port}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def cookie(self, name: str) -> str:
        return next(c.value for c in self.jar if c.name == name)

    def login(self, username: str, password: str = PASSWORD) -> str:
        """Sign in on /accounts/login/; returns the session id."""
        with self.opener.open(f"{self.base}/accounts/login/", timeout=10) as resp:
            page = resp.read().decode()
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        data = urlencode({"username": username, "password": password,
                          "csrfmiddlewaretoken": token, "next": "/"}).encode()
        with self.opener.open(f"{self.base}/accounts/login/", data=data, timeout=20) as resp:
            assert resp.url == f"{self.base}/", resp.url  # redirected: signed in
        return self.cookie("sessionid")

    def post_form(self, path: str, fields: dict[str, str]) -> int:
        data = urlencode({**fields, "csrfmiddlewaretoken": self.cookie("csrftoken")}).encode()
        with self.opener.open(f"{self.base}{path}", data=data, timeout=20) as resp:
            return resp.status
