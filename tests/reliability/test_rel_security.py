"""Scenario 6: security by default.

Origin check on and configurable; the relay's Redis reached with a password and over TLS
(``rediss://``) taken from ``CHANNELS_FLEET_REDIS_URL``; nothing on the wire pickled (raw LIST
elements read from Redis); probes and metrics only on their own port.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
import redis as redis_py
from relfigures import Figures
from relload import whoami, ws
from support.split import split_stack
from websockets.exceptions import InvalidStatus

from channels_fleet.dev.cluster import redis_server_binary
from channels_fleet.dev.ports import free_ports
from channels_fleet.dev.stack import FleetStack
from channels_fleet.process import die_with_parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PASSWORD = "s3cret-relay"


def start_redis(tmp: Path, *extra: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [redis_server_binary(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp), "--logfile", str(tmp / "redis.log"), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=die_with_parent)
    return proc


def wait_port(port: int, proc: subprocess.Popen[bytes], tmp: Path) -> None:
    import socket

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError((tmp / "redis.log").read_text()[-2000:])
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"redis on {port} did not start")


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("authredis")
    (port,) = free_ports(1)
    proc = start_redis(tmp, "--port", str(port), "--requirepass", PASSWORD)
    wait_port(port, proc, tmp)
    yield f"redis://:{PASSWORD}@127.0.0.1:{port}"
    proc.kill()
    proc.wait()


def make_certs(tmp: Path) -> Path:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=fleet-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "server.key", "-out", "server.csr")
    (tmp / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt")
    return tmp


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = make_certs(tmp_path_factory.mktemp("tlsredis"))
    (port,) = free_ports(1)
    proc = start_redis(tmp, "--port", "0", "--tls-port", str(port),
                       "--tls-cert-file", str(tmp / "server.crt"),
                       "--tls-key-file", str(tmp / "server.key"),
                       "--tls-ca-cert-file", str(tmp / "ca.crt"), "--tls-auth-clients", "no",
                       "--requirepass", PASSWORD)
    wait_port(port, proc, tmp)
    yield f"rediss://:{PASSWORD}@127.0.0.1:{port}?ssl_ca_certs={tmp / 'ca.crt'}"
    proc.kill()
    proc.wait()


def single_fleet(url: str, tmp: Path) -> FleetStack:
    return split_stack([url], tmp, cluster=False)


async def test_origin_check_on_by_default_and_configurable(
    rel_fleet: FleetStack, figures: Figures
) -> None:
    try:
        default = rel_fleet.interface(wait=False)
        configured = rel_fleet.interface(wait=False, CHANNELS_FLEET_ALLOWED_ORIGINS="localhost")
        rel_fleet.worker()
        default.wait_ready()
        configured.wait_ready()
        statuses = {}
        for name, proc, origin in [
            ("default, foreign", default, "http://evil.example"),
            ("default, same host", default, default.origin),
            ("default, localhost", default, f"http://localhost:{default.port}"),
            ("configured, localhost", configured, f"http://localhost:{configured.port}"),
            ("configured, foreign", configured, "http://evil.example"),
        ]:
            try:
                async with ws(proc, "/ws/echo/o/", origin=origin) as sock:
                    await whoami(sock)
                    statuses[name] = 101
            except InvalidStatus as exc:
                statuses[name] = exc.response.status_code
                assert b"Traceback" not in (exc.response.body or b"")
        refusals = sum(p.log.read_text().count("origin not allowed") for p in (default,
                                                                                configured))
    finally:
        rel_fleet.stop()
    expected = {"default, foreign": 403, "default, same host": 101, "default, localhost": 403,
                "configured, localhost": 101, "configured, foreign": 403}
    figures.record("6. security: origin", "WebSocket handshakes with 5 Origin headers against "
                   "an interface with the default and one with CHANNELS_FLEET_ALLOWED_ORIGINS="
                   "localhost", "HTTP status of the handshake; refusal log lines",
                   ", ".join(f"{k}: {v}" for k, v in statuses.items())
                   + f"; {refusals} refusal log lines", statuses == expected and refusals == 3)
    assert statuses == expected
    assert refusals == 3


async def relay_roundtrip(fleet: FleetStack) -> tuple[int, str]:
    iface, (worker,) = fleet.start()
    async with ws(iface, "/ws/echo/secure/") as sock:
        await sock.send("over the relay")
        echoed = await asyncio.wait_for(sock.recv(), 10)
        return await whoami(sock), str(echoed)


async def test_redis_password_from_env__works__wrong_one_refused_clearly(
    password_redis: str, tmp_path: Path, figures: Figures
) -> None:
    fleet = single_fleet(password_redis, tmp_path)
    try:
        pid, echoed = await relay_roundtrip(fleet)
        ok = echoed == "over the relay"
        wrong = fleet.interface(wait=False, CHANNELS_FLEET_REDIS_URL=password_redis.replace(
            PASSWORD, "wrong"))
        status = wrong.popen.wait(timeout=30)
        log = wrong.log.read_text()
    finally:
        fleet.stop()
    clear = "could not start" in log and "Traceback" not in log
    figures.record("6. security: Redis password", "interface + worker with CHANNELS_FLEET_"
                   "REDIS_URL=redis://:<password>@... on a redis-server --requirepass; then an "
                   "interface with a wrong password", "echo over the relay; exit status and log",
                   f"echo {'ok' if ok else 'FAILED'}; wrong password: exit {status}, "
                   f"{'one clear log line, no traceback' if clear else 'UNCLEAR: ' + log[-300:]}",
                   ok and status == 3 and clear)
    assert ok
    assert status == 3
    assert clear, log


async def test_redis_tls_from_env(tls_redis: str, tmp_path: Path, figures: Figures) -> None:
    fleet = single_fleet(tls_redis, tmp_path)
    try:
        pid, echoed = await relay_roundtrip(fleet)
        # The queue collector reads the same TLS Redis at each scrape.
        status, metrics = get(f"http://127.0.0.1:{fleet.procs[0].metrics_port}/metrics")
    finally:
        fleet.stop()
    assert status == 200
    assert b'channels_fleet_work_queue_depth{queue="fleet.connect"}' in metrics
    figures.record("6. security: Redis TLS", "interface + worker with CHANNELS_FLEET_REDIS_URL="
                   "rediss://:<password>@127.0.0.1:<tls-port>?ssl_ca_certs=<ca> on redis-server "
                   "--port 0 --tls-port (our own CA)", "echo over the relay",
                   f"echo {'ok' if echoed == 'over the relay' else 'FAILED'} (TLS-only server)",
                   echoed == "over the relay")
    assert echoed == "over the relay"


def raw_elements(client: redis_py.Redis) -> list[tuple[bytes, bytes]]:
    out = []
    for key in client.scan_iter(match="fleet:q:*"):
        if client.type(key) == b"list":
            out += [(key, value) for value in client.lrange(key, 0, -1)]
    return out


async def test_nothing_pickled_on_the_wire__msgpack_only(
    password_redis: str, tmp_path: Path, figures: Figures
) -> None:
    client = redis_py.Redis.from_url(password_redis)
    client.flushall()
    fleet = single_fleet(password_redis, tmp_path)
    elements: list[tuple[bytes, bytes]] = []
    try:
        iface = fleet.interface()
        # 1. A connect envelope with no worker to take it: it waits in fleet.connect.
        pending = asyncio.ensure_future(ws(iface, "/ws/echo/queued/").__aenter__())
        await asyncio.sleep(1.0)
        elements += raw_elements(client)
        worker = fleet.worker()
        sock = await pending
        await whoami(sock)
        # 2. Relay batches to a frozen worker wait in its process LIST.
        worker.signal(signal.SIGSTOP)
        try:
            for i in range(5):  # apart: the first batch may go to the pop already waiting
                await sock.send(f"batch {i}")
                await asyncio.sleep(0.3)
            elements += raw_elements(client)
        finally:
            worker.signal(signal.SIGCONT)
        await sock.close()
    finally:
        fleet.stop()
        client.close()
    kinds: dict[str, int] = {}
    pickled = 0
    for _key, value in elements:
        _expires, _channels, body = value.split(b"|", 2)
        pickled += body[:1] == b"\x80"
        decoded = msgpack.unpackb(body, raw=False)
        kinds[decoded["type"]] = kinds.get(decoded["type"], 0) + 1
    figures.record("6. security: no pickle", "a connect envelope queued with no worker, 5 "
                   "frames to a SIGSTOP'd worker; every element of every fleet:q:* LIST read raw",
                   "elements that are msgpack / start with a pickle opcode",
                   f"{len(elements)} elements ({kinds}), all msgpack, {pickled} pickled",
                   pickled == 0 and "fleet.connect" in kinds and "fleet.batch" in kinds)
    assert pickled == 0
    assert "fleet.connect" in kinds and "fleet.batch" in kinds


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_probes_and_metrics_only_on_their_own_port(rel_fleet: FleetStack, figures: Figures) -> None:
    try:
        iface, _ = rel_fleet.start()
        public = {p: get(f"http://127.0.0.1:{iface.port}{p}")
                  for p in ("/metrics", "/healthz", "/readyz")}
        private = {p: get(f"http://127.0.0.1:{iface.metrics_port}{p}")
                   for p in ("/metrics", "/healthz", "/readyz")}
    finally:
        rel_fleet.stop()
    leaks = [p for p, (_, body) in public.items() if b"channels_fleet_" in body]
    ok = (all(s == 404 for s, _ in public.values()) and not leaks
          and all(s == 200 for s, _ in private.values())
          and b"channels_fleet_open_connections" in private["/metrics"][1])
    figures.record("6. security: probes port", "GET /metrics, /healthz, /readyz on the public "
                   "port and on CHANNELS_FLEET_METRICS_PORT", "HTTP status; metric names in body",
                   "public: " + ", ".join(f"{p} {s}" for p, (s, _) in public.items())
                   + "; metrics port: " + ", ".join(f"{p} {s}" for p, (s, _) in private.items()),
                   ok)
    assert ok, (public, {p: s for p, (s, _) in private.items()})
