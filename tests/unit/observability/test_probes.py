"""ProbeServer over a real loopback socket: status codes, bodies, limits, readiness metric."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from channels_fleet.dev.ports import free_ports
from channels_fleet.observability.metrics import FleetMetrics
from channels_fleet.observability.probes import MAX_REQUEST_BYTES, ProbeServer

pytestmark = pytest.mark.timeout(20)


async def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read the whole response (the server closes), parse it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


async def get(port: int, path: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    return await raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())


class Ready:
    """A readiness callable the test flips."""

    def __init__(self) -> None:
        self.state: tuple[bool, str] = (True, "ok")
        self.error: Exception | None = None
        self.delay = 0.0

    async def __call__(self) -> tuple[bool, str]:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.state


@pytest.fixture
async def probe():
    registry = CollectorRegistry()
    metrics = FleetMetrics(registry)
    ready = Ready()
    server = ProbeServer("127.0.0.1", free_ports(1)[0], readiness=ready, registry=registry,
                         component="worker", metrics=metrics)
    await server.start()
    try:
        yield server, ready, metrics, registry
    finally:
        await server.stop()


async def test_healthz_answers_200(probe) -> None:
    server, *_ = probe
    status, headers, body = await get(server.port, "/healthz")
    assert (status, body) == (200, b"ok\n")
    assert headers["content-length"] == "3"


async def test_readyz_follows_the_readiness_callable(probe) -> None:
    server, ready, _, registry = probe
    assert (await get(server.port, "/readyz"))[::2] == (200, b"ok\n")
    assert registry.get_sample_value("channels_fleet_ready", {"component": "worker"}) == 1
    ready.state = (False, "draining")
    assert (await get(server.port, "/readyz"))[::2] == (503, b"draining\n")
    assert registry.get_sample_value("channels_fleet_ready", {"component": "worker"}) == 0


async def test_readyz__check_raises_gives_503_without_traceback(probe) -> None:
    server, ready, *_ = probe
    ready.error = RuntimeError("secret internals")
    status, _, body = await get(server.port, "/readyz")
    assert status == 503
    assert body == b"readiness check failed: RuntimeError\n"


async def test_readyz__slow_check_times_out_as_not_ready(probe, monkeypatch) -> None:
    server, ready, *_ = probe
    monkeypatch.setattr("channels_fleet.observability.probes.READINESS_TIMEOUT", 0.2)
    ready.delay = 5
    started = time.monotonic()
    status, _, body = await get(server.port, "/readyz")
    assert status == 503 and b"timed out" in body
    assert time.monotonic() - started < 2


async def test_healthz_stays_200_while_not_ready(probe) -> None:
    server, ready, *_ = probe
    ready.state = (False, "layer unreachable")
    assert (await get(server.port, "/healthz"))[0] == 200


async def test_metrics_serves_the_registry_and_refreshes_ready(probe) -> None:
    server, ready, metrics, _ = probe
    metrics.closes.labels("1012").inc(2)
    ready.state = (False, "heartbeat stale")
    status, headers, body = await get(server.port, "/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert 'channels_fleet_closes_total{code="1012"} 2.0' in text
    assert 'channels_fleet_ready{component="worker"} 0.0' in text
    # A fresh registry holds only our metrics, not the process collectors.
    assert "process_cpu_seconds_total" not in text


async def test_metrics__openmetrics_when_asked(probe) -> None:
    server, *_ = probe
    status, headers, body = await get(
        server.port, "/metrics", "Accept: application/openmetrics-text; version=1.0.0\r\n")
    assert status == 200
    assert headers["content-type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


async def test_query_string_is_ignored(probe) -> None:
    server, *_ = probe
    assert (await get(server.port, "/healthz?verbose=1"))[0] == 200


async def test_unknown_path_is_404(probe) -> None:
    server, *_ = probe
    status, _, body = await get(server.port, "/admin")
    assert status == 404 and b"/healthz" in body


async def test_post_is_405(probe) -> None:
    server, *_ = probe
    status, *_ = await raw(server.port, b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    assert status == 405


async def test_head_has_headers_and_no_body(probe) -> None:
    server, *_ = probe
    status, headers, body = await raw(server.port, b"HEAD /healthz HTTP/1.1\r\n\r\n")
    assert status == 200 and headers["content-length"] == "3" and body == b""


async def test_garbage_is_400(probe) -> None:
    server, *_ = probe
    status, _, body = await raw(server.port, b"HELLO\r\n\r\n")
    assert (status, body) == (400, b"malformed request line\n")


async def test_oversized_head_is_refused(probe) -> None:
    server, *_ = probe
    filler = "X-Pad: " + "a" * (MAX_REQUEST_BYTES * 2) + "\r\n"
    status, *_ = await raw(server.port, f"GET /healthz HTTP/1.1\r\n{filler}\r\n".encode())
    assert status == 431


async def test_many_concurrent_probes(probe) -> None:
    server, *_ = probe
    results = await asyncio.gather(*(get(server.port, "/readyz") for _ in range(40)))
    assert {r[0] for r in results} == {200}


async def test_stop_closes_a_client_that_sends_nothing(probe) -> None:
    server, *_ = probe
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    await asyncio.sleep(0.05)
    await server.stop()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", server.port)


async def test_port_in_use_raises_oserror(probe) -> None:
    server, *_ = probe
    other = ProbeServer("127.0.0.1", server.port, registry=CollectorRegistry())
    with pytest.raises(OSError):
        await other.start()


async def test_metrics__multiprocess_dir_uses_the_files(tmp_path, monkeypatch) -> None:
    # With the default registry and PROMETHEUS_MULTIPROC_DIR set, /metrics reads every
    # process's files (what the web tier's gunicorn workers write).
    import subprocess
    import sys

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    subprocess.run(
        [sys.executable, "-c",
         "from channels_fleet.observability.metrics import METRICS;"
         "METRICS.web_requests.labels('POST', '5xx').inc(7)"],
        check=True, timeout=30,
    )
    server = ProbeServer("127.0.0.1", free_ports(1)[0])
    await server.start()
    try:
        status, _, body = await get(server.port, "/metrics")
    finally:
        await server.stop()
    assert status == 200
    assert b'channels_fleet_web_requests_total{method="POST",status="5xx"} 7.0' in body


def test_healthz_does_not_answer_while_the_loop_is_blocked() -> None:
    # The probe runs on the service's own loop: a blocked loop means no answer, so the
    # kubelet's timeout (not a cheerful 200) decides. Loop in a thread, client here.
    import threading
    import urllib.request

    loop = asyncio.new_event_loop()
    server = ProbeServer("127.0.0.1", free_ports(1)[0], registry=CollectorRegistry())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(5)
    url = f"http://127.0.0.1:{server.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            assert resp.status == 200
        loop.call_soon_threadsafe(time.sleep, 1.5)  # a sync call blocking the loop
        time.sleep(0.1)
        with pytest.raises(OSError):  # TimeoutError is an OSError
            urllib.request.urlopen(url, timeout=0.5)
        time.sleep(1.5)
        with urllib.request.urlopen(url, timeout=2) as resp:
            assert resp.status == 200
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
