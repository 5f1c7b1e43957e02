"""Every dashboard panel's query, run by a real Prometheus scraping the local stack under load.

The stack: 1 interface and 2 workers (``channels-fleet interface|worker``) on the real Redis
Cluster, a gunicorn web tier, and the work-queue metrics, each scraped every second by Debian's
``prometheus`` with the pod/namespace/release labels the chart's ServiceMonitor adds. While
WebSocket, HTTP and web clients keep it busy, every target of every panel in the dashboard JSON
is evaluated through ``/api/v1/query`` (Grafana's variables substituted) and must return data.
The alert rules are loaded too and must all evaluate without error.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from livestack import LiveStack
from promserver import Prometheus, Target, run_promtool
from websockets.asyncio.client import connect

from channels_fleet.dev.cluster import LocalRedis

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "deploy" / "grafana" / "channels-fleet.dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "channels-fleet.rules.yml"
NAMESPACE = "fleet-live"
RELEASE = "live"  # what the chart's ServiceMonitor adds to every series
RATE_INTERVAL = "5s"  # Grafana's $__rate_interval for a 1 s scrape interval (4 x scrape, +)

# Panels that only show something when the load did it: their value must be > 0, not just
# present. (ChannelFull, layer errors, drops, draining and queue backlog are rightly 0 here.)
MUST_BE_POSITIVE = {
    "Open connections by pod", "Owned connections by worker pod", "Ready processes",
    "Relay round trip quantiles", "Relay round trip p99 by pod", "Relay round trip heatmap",
    "Queue wait quantiles", "Queue wait heatmap", "Handler latency p99 by consumer",
    "Handler latency heatmap", "Web request latency quantiles", "Messages by pod and direction",
    "Connects claimed by pod", "Consumer events by consumer", "Web requests by status",
    "Closes by code", "Redis nodes up", "CPU by pod", "Resident memory by pod",
    "RSS per open connection", "Ready replicas by component", "Worker saturation (fleet)",
    "Saturation by worker pod", "Event loop lag by pod",
}

# "By pod" panels of one component must show exactly that component's pods.
EXPECTED_PODS = {
    "Open connections by pod": {"interface-0"},
    "Relay round trip p99 by pod": {"interface-0"},
    "Messages by pod and direction": {"interface-0"},
    "Connects claimed by pod": {"interface-0"},
    "Owned connections by worker pod": {"worker-0", "worker-1"},
    "Worker heartbeat age": {"worker-0", "worker-1"},
    "RSS per open connection": {"interface-0"},
    "Saturation by worker pod": {"worker-0", "worker-1"},
    # Mean lag by pod (interfaces and workers; web has no event loop) and p99 by component ("").
    "Event loop lag by pod": {"interface-0", "worker-0", "worker-1", ""},
}


def panel_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) for every target in the dashboard JSON."""
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["refId"], target["expr"]))
            walk(panel.get("panels", []))

    walk(json.loads(DASHBOARD.read_text())["panels"])
    return found


def substitute(expr: str) -> str:
    return (expr.replace("$__rate_interval", RATE_INTERVAL).replace("$namespace", NAMESPACE)
            .replace("$release", RELEASE))


def finite_values(result: list[dict[str, Any]]) -> list[float]:
    values = [float(series["value"][1]) for series in result]
    return [v for v in values if math.isfinite(v)]


class Load:
    """WebSocket echo/room/close clients, HTTP consumers and web requests, until stopped."""

    def __init__(self, interface_port: int, web_port: int) -> None:
        self.iface = interface_port
        self.web = web_port
        self.origin = f"http://127.0.0.1:{interface_port}"
        self.stop = asyncio.Event()
        self.counts = {"echo": 0, "close": 0, "room": 0, "http": 0, "web": 0}
        self.errors: list[str] = []

    def ws(self, path: str) -> Any:
        return connect(f"ws://127.0.0.1:{self.iface}{path}", origin=self.origin, open_timeout=15)

    async def _guard(self, kind: str, once: Any) -> None:
        while not self.stop.is_set():
            try:
                await once()
                self.counts[kind] += 1
            except Exception as exc:  # count, keep loading; the test checks the rate
                self.errors.append(f"{kind}: {exc!r}")
                await asyncio.sleep(0.2)

    async def echo(self, n: int) -> None:
        async with self.ws(f"/ws/echo/c{n}/") as sock:
            for i in range(5):
                await sock.send(f"m{i}")
                assert await asyncio.wait_for(sock.recv(), 10) == f"m{i}"

    async def close_1011(self) -> None:
        async with self.ws("/ws/close/1011/") as sock:
            await sock.send("bye")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sock.recv(), 10)
        await asyncio.sleep(0.2)

    async def room(self) -> None:
        async with self.ws("/ws/room/live/") as a, self.ws("/ws/room/live/") as b:
            await a.send("hello room")
            await asyncio.wait_for(b.recv(), 10)

    def _get(self, port: int, path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
        try:
            conn.request("GET", path, headers={"Host": "127.0.0.1"})
            conn.getresponse().read()
        finally:
            conn.close()

    async def http(self) -> None:
        await asyncio.to_thread(self._get, self.iface, "/stream/")

    async def web_request(self) -> None:
        await asyncio.to_thread(self._get, self.web, "/")
        await asyncio.sleep(0.05)

    async def idle_sockets(self, count: int) -> None:
        """Hold ``count`` sockets open, so open/owned connections are > 0 at query time."""
        async with contextlib.AsyncExitStack() as stack:
            for n in range(count):
                await stack.enter_async_context(self.ws(f"/ws/echo/idle{n}/"))
            await self.stop.wait()

    def tasks(self) -> list[asyncio.Task[None]]:
        jobs = [self._guard("echo", lambda n=n: self.echo(n)) for n in range(6)]
        jobs += [self._guard("close", self.close_1011), self._guard("room", self.room),
                 self._guard("http", self.http), self._guard("web", self.web_request),
                 self.idle_sockets(10)]
        return [asyncio.ensure_future(job) for job in jobs]


@pytest.fixture
def live(redis_cluster: LocalRedis, tmp_path: Path):
    stack = LiveStack(redis_cluster.urls[:3], tmp_path)
    prometheus = None
    try:
        iface = stack.interface("interface-0")
        stack.worker("worker-0")
        stack.worker("worker-1")
        web = stack.web("web-0")
        stack.wait_ready()
        labels = {"namespace": NAMESPACE, "release": RELEASE}
        targets = [Target(f"127.0.0.1:{s.metrics_port}", {"pod": s.name, **labels})
                   for s in stack.services]
        prometheus = Prometheus(tmp_path, targets, [RULES])
        prometheus.wait_ready()
        prometheus.wait_targets_up(len(targets))
        yield stack, prometheus, iface, web
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()


async def test_dashboard_queries_return_data__local_stack(live, capsys) -> None:
    stack, prometheus, iface, web = live
    load = Load(iface.port, web.port)
    tasks = load.tasks()
    try:
        # Enough scrapes for 5 s rate windows to hold several samples of real traffic.
        await asyncio.sleep(8)
        assert sum(load.counts.values()) > 20, (load.counts, load.errors[-5:])
        rows = []
        pods: dict[str, set[str]] = {}
        for title, ref, expr in panel_targets():
            result = await asyncio.to_thread(prometheus.query, substitute(expr))
            values = finite_values(result)
            rows.append((title, ref, len(result), max(values) if values else None, expr))
            pods.setdefault(title, set()).update(
                series["metric"].get("pod", "") for series in result)
        rules = await asyncio.to_thread(prometheus.api, "rules")
    finally:
        load.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    report = "\n".join(
        f"{title} [{ref}]: {n} series, max {peak!r}" for title, ref, n, peak, _ in rows)
    with capsys.disabled():
        print(f"\n--- dashboard queries on the live stack (load {load.counts}) ---\n{report}")
    empty = [f"{title} [{ref}]: {expr}" for title, ref, n, _, expr in rows if n == 0]
    assert not empty, "panels without data:\n" + "\n".join(empty)
    flat = [f"{title} [{ref}] max={peak}" for title, ref, _, peak, _ in rows
            if title in MUST_BE_POSITIVE and not (peak and peak > 0)]
    assert not flat, "panels the load should move but did not:\n" + "\n".join(flat)
    wrong_pods = {title: pods[title] for title, want in EXPECTED_PODS.items()
                  if pods[title] != want}
    assert not wrong_pods, f"by-pod panels show other pods: {wrong_pods}"
    unhealthy = [(rule["name"], rule.get("lastError")) for group in rules["groups"]
                 for rule in group["rules"] if rule["health"] != "ok"]
    assert not unhealthy, unhealthy
    assert len(load.errors) < sum(load.counts.values()) / 10, load.errors[-10:]


@pytest.fixture
def backlog_stack(redis_cluster: LocalRedis, tmp_path: Path):
    """1 interface (claim deadline 30 s), 1 worker that owns at most 2 connections."""
    stack = LiveStack(redis_cluster.urls[:3], tmp_path)
    prometheus = None
    try:
        iface = stack.interface("interface-0", CHANNELS_FLEET_CLAIM_TIMEOUT="30")
        stack.worker("worker-0", "--concurrency", "2")
        stack.wait_ready()
        labels = {"namespace": NAMESPACE, "release": RELEASE}
        targets = [Target(f"127.0.0.1:{s.metrics_port}", {"pod": s.name, **labels})
                   for s in stack.services]
        prometheus = Prometheus(tmp_path, targets, [RULES])
        prometheus.wait_ready()
        prometheus.wait_targets_up(len(targets))
        yield stack, prometheus, iface
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()


async def test_queue_depth_tracks_a_real_backlog__prometheus_and_llen(
    backlog_stack, redis_cluster: LocalRedis
) -> None:
    """What both autoscalers read: the HPA's query through Prometheus, KEDA's LLEN."""
    from redis.asyncio.cluster import RedisCluster

    _, prometheus, iface = backlog_stack
    load = Load(iface.port, 0)
    hpa_query = (f'max by (queue) (channels_fleet_work_queue_depth{{namespace="{NAMESPACE}",'
                 f'queue="fleet.connect"}})')
    age_query = f'max(channels_fleet_work_queue_oldest_age_seconds{{namespace="{NAMESPACE}"}})'
    redis = RedisCluster.from_url(redis_cluster.urls[0])

    async def prom_value(expr: str) -> float | None:
        result = await asyncio.to_thread(prometheus.query, expr)
        return float(result[0]["value"][1]) if result else None

    async def wait_for(expr: str, want: float, timeout: float = 20) -> float | None:
        value = None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            value = await prom_value(expr)
            if value == want:
                return value
            await asyncio.sleep(0.5)
        return value

    async with contextlib.AsyncExitStack() as stack:
        owned = [await stack.enter_async_context(load.ws(f"/ws/echo/own{n}/")) for n in range(2)]
        # Six more connects: the only worker is full, so their envelopes wait in the queue.
        waiting = [asyncio.ensure_future(stack.enter_async_context(load.ws(f"/ws/echo/w{n}/")))
                   for n in range(6)]
        try:
            assert await wait_for(hpa_query, 6) == 6
            assert await redis.llen("fleet:q:{fleet.connect}") == 6  # what KEDA reads
            await asyncio.sleep(1.5)
            assert (await prom_value(age_query) or 0) >= 1.0
            # Free two slots: the worker takes two envelopes, the backlog shrinks to 4.
            for sock in owned:
                await sock.close()
            assert await wait_for(hpa_query, 4) == 4
            assert await redis.llen("fleet:q:{fleet.connect}") == 4
            done = [task for task in waiting if task.done() and not task.exception()]
            assert len(done) == 2  # exactly the two that were claimed got their handshake
        finally:
            for task in waiting:
                task.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)
            # The cluster is shared by the session: leave no envelopes for other tests' workers.
            await redis.delete("fleet:q:{fleet.connect}")
            await redis.aclose()


def scrape(port: int) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        return conn.getresponse().read()
    finally:
        conn.close()


async def test_live_metrics_pass_promtool_check_metrics(backlog_stack) -> None:
    """What a running interface and worker serve on /metrics, saturation metrics included, is
    clean for `promtool check metrics` (names, units, help, types)."""
    stack, _, _ = backlog_stack
    for service in stack.services:
        exposition = await asyncio.to_thread(scrape, service.metrics_port)
        text = exposition.decode()
        assert f'channels_fleet_event_loop_lag_seconds_count{{component="{service.kind}"}}' in text
        if service.kind == "worker":
            assert "\nchannels_fleet_owned_connections_limit 2.0\n" in text
        result = run_promtool("check", "metrics", stdin=exposition)
        assert result.returncode == 0, f"{service.name}: {result.stdout}{result.stderr}"
        assert result.stdout.strip() == "" and result.stderr.strip() == "", (
            f"{service.name}: {result.stdout}{result.stderr}")


async def test_saturation_rule_on_a_real_worker(backlog_stack) -> None:
    """The autoscaler's input, recorded by the real rules from the real worker: one worker of
    concurrency 2 owning 2 sockets is full (1.0); once they close it is nearly idle."""
    _, prometheus, iface = backlog_stack
    load = Load(iface.port, 0)
    query = f'channels_fleet:worker_saturation:ratio{{namespace="{NAMESPACE}",release="{RELEASE}"}}'

    async def saturation(want: Callable[[float], bool], timeout: float = 20) -> float | None:
        value = None
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            result = await asyncio.to_thread(prometheus.query, query)
            value = float(result[0]["value"][1]) if result else None
            if value is not None and want(value):
                return value
            await asyncio.sleep(0.5)
        return value

    async with contextlib.AsyncExitStack() as stack:
        for n in range(2):
            await stack.enter_async_context(load.ws(f"/ws/echo/full{n}/"))
        full = await saturation(lambda v: v == 1.0)
    idle = await saturation(lambda v: v < 0.3)
    print(f"\nsaturation with 2 of 2 owned: {full}; after they closed: {idle}")
    assert full == 1.0
    assert idle is not None and idle < 0.3
