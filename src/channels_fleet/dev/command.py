"""``channels-fleet dev APP``: the split on a developer's machine in one command, like runserver.

    channels-fleet dev myproject.asgi:application [--port 8000] [--workers 2]

Run from the directory holding ``manage.py``. It uses ``CHANNELS_FLEET_REDIS_URL``, or starts a
private ``redis-server`` on a free port (removed on exit); then one interface on ``--port`` and
``--workers`` workers. Everything is served on that one port: WebSockets, and plain HTTP, which
the interface relays to the workers, whose ASGI app serves Django's views through its
``"http"`` route and, with ``DEBUG``, static files as runserver does (no web tier, no WSGI app
needed). When a ``.py`` file under the directory is saved, new workers start with the new code;
once they are ready the old ones drain and hand their WebSockets over (re-homing): the sockets
stay open and their consumers run again from ``connect`` on the new code. If the new code does
not start, the old workers keep serving. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from channels_fleet.exceptions import STARTUP_FAILURE
from channels_fleet.settings import DevSettings, SettingsError

from .cluster import DevClusterError, LocalRedis, redis_server_binary
from .ports import free_ports
from .stack import CLI, FleetStack, ServiceProcess
from .watch import LogTail, SourceWatcher

READY_TIMEOUT = 60.0
#: A drain in dev hands over a few sockets; Ctrl-C should not wait 25 s for anything.
DRAIN_TIMEOUT = "5"


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="channels-fleet dev", description=__doc__.split("\n")[0])
    parser.add_argument("app", nargs="?", help="the project's ASGI app, module:attribute "
                                               "(CHANNELS_FLEET_APP)")
    parser.add_argument("--bind", help="address to listen on (CHANNELS_FLEET_BIND, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (CHANNELS_FLEET_PORT, 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (2)")
    parser.add_argument("--redis-url", help="a Redis to use (CHANNELS_FLEET_REDIS_URL; unset: "
                                            "a private redis-server)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = DevSettings.from_env(app=args.app, bind=args.bind, port=args.port,
                                        dev_workers=args.workers, redis_url=args.redis_url)
    except SettingsError as exc:
        print(f"channels-fleet dev: {exc}", file=sys.stderr)
        return STARTUP_FAILURE
    return Dev(settings, Path.cwd()).run()


def say(text: str) -> None:
    print(f"channels-fleet dev: {text}", flush=True)


class Dev:
    """The processes of one ``channels-fleet dev`` run, its reloads and its stop."""

    def __init__(self, settings: DevSettings, root: Path) -> None:
        self.settings = settings
        self.root = root
        self.tmp = Path(tempfile.mkdtemp(prefix="channels-fleet-dev-"))
        self.redis: LocalRedis | None = None
        self.stack: FleetStack | None = None
        self.interface: ServiceProcess | None = None
        self.workers: list[ServiceProcess] = []
        self.tail = LogTail(self._logs)
        self.stopping = False

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._stop)
        tail = self.tail
        try:
            urls = self._redis_urls()
            stack = self.stack = FleetStack(
                urls, self.tmp / "logs", project=self.root, app=self.settings.app,
                death_signal=signal.SIGTERM, env=self._env())
            tail.start()
            self.interface = self._start_interface(stack)
            self.workers = [stack.worker(wait=False) for _ in range(self.settings.dev_workers)]
            stack.wait_ready(self.interface, *self.workers, timeout=READY_TIMEOUT)
            watcher = SourceWatcher(self.root)
            self._banner(urls, len(watcher))
            return self._serve(stack, watcher)
        except (DevClusterError, RuntimeError) as exc:
            if not self.stopping:
                say(f"could not start: {first_line(exc)}")
            return 1
        finally:
            self._shutdown(tail)

    def _serve(self, stack: FleetStack, watcher: SourceWatcher) -> int:
        """Until Ctrl-C: reload the workers when the project's Python files change."""
        while not self.stopping:
            time.sleep(self.settings.reload_interval)
            if self.interface is not None and not self.interface.alive():
                say(f"the interface exited ({self.interface.popen.returncode}); stopping")
                return 1
            changed = watcher.changed()
            if changed and not self.stopping:
                self._reload(stack, changed)
        return 0

    def _reload(self, stack: FleetStack, changed: list[Path]) -> None:
        """New workers on the new code; once ready, the old ones drain onto them."""
        names = [str(p.relative_to(self.root)) for p in changed]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        say(f"{shown} changed: reloading the workers")
        started = time.monotonic()
        fresh = [stack.worker(wait=False) for _ in range(self.settings.dev_workers)]
        try:
            stack.wait_ready(*fresh, timeout=READY_TIMEOUT)
        except RuntimeError:
            self.tail.flush()  # their last lines (the traceback) before they are forgotten
            for proc in fresh:
                proc.stop()
            say("the new code does not start (see above): the workers keep the old code; "
                "fix it and save again")
            return
        for old in self.workers:
            old.signal(signal.SIGTERM)  # drain: its WebSockets are re-homed onto the new ones
        self.workers = fresh
        say(f"workers reloaded in {time.monotonic() - started:.1f} s; open WebSockets move "
            "to them")

    # -- starting ----------------------------------------------------------------------------

    def _redis_urls(self) -> list[str]:
        if self.settings.redis_url:
            return list(self.settings.redis_url)
        try:
            redis_server_binary()
        except DevClusterError:
            raise DevClusterError(
                "CHANNELS_FLEET_REDIS_URL is not set, and no redis-server (or valkey-server) is "
                "on PATH to start a private one: install it (Debian/Ubuntu: apt install "
                "redis-server; macOS: brew install redis) or set CHANNELS_FLEET_REDIS_URL"
            ) from None
        self.redis = LocalRedis(self.tmp / "redis", masters=1, replicas=0).start()
        return list(self.redis.urls)

    def _env(self) -> dict[str, str]:
        return {
            "CHANNELS_FLEET_LOG_LEVEL": self.settings.log_level,
            "CHANNELS_FLEET_DRAIN_TIMEOUT": DRAIN_TIMEOUT,
        }

    def _start_interface(self, stack: FleetStack) -> ServiceProcess:
        s = self.settings
        (metrics,) = free_ports(1)
        return stack.spawn("interface", [*CLI, "interface", "--bind", s.bind, "--port",
                                         str(s.port)],
                           port=s.port, metrics_port=metrics,
                           CHANNELS_FLEET_METRICS_PORT=str(metrics))

    def _banner(self, urls: list[str], files: int) -> None:
        s = self.settings
        host = "localhost" if s.bind in ("0.0.0.0", "::") else s.bind
        redis = (f"a private redis-server at {urls[0]}" if self.redis is not None
                 else ", ".join(urls))
        say(f"http://{host}:{s.port}/\n"
            f"  {s.app} on 1 interface and {s.dev_workers} workers: pages, static files "
            "(DEBUG) and WebSockets on this one port\n"
            f"  Redis: {redis}\n"
            f"  watching {files} .py files under {self.root}: saving one reloads the workers, "
            "open WebSockets stay open\n"
            "  Ctrl-C stops everything")

    # -- stopping ----------------------------------------------------------------------------

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _logs(self) -> list[tuple[str, Path]]:
        return [(p.name, p.log) for p in (self.stack.procs if self.stack else [])]

    def _shutdown(self, tail: LogTail) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        try:
            if self.stack is not None:
                self.stack.terminate(timeout=float(DRAIN_TIMEOUT) + 3)
                self.stack.close()
            if tail.is_alive():
                tail.stop()
            if self.redis is not None:
                self.redis.stop()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
            say("stopped")
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, signal.SIG_DFL)


def first_line(exc: BaseException) -> str:
    """The exception's message, and for a service that exited, the lines that say why."""
    text = str(exc)
    if "\n" not in text:
        return text
    head, _, rest = text.partition("\n")
    why = [line for line in rest.splitlines() if "could not start" in line or "Error" in line]
    return f"{head} {why[-1].strip() if why else ''}".strip()
