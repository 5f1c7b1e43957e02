"""Scenario 7: soak. Mixed load for RELIABILITY_SOAK_SECONDS (60 in ``make test``, 600 in
``make test-reliability``); RSS and open files of every interface and worker sampled from
/proc: after a warm-up they must stay flat (no leak).

Load: 60 echo sockets at 5 messages/s, a 20-socket room with a broadcast every second, a
socket opened and closed every 0.2 s, an HTTP request every 0.2 s, against 1 interface and 2
workers.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import time

import pytest
from relfigures import Figures
from relload import open_echoes, open_fds, rss_kb, settle, whoami, ws

from channels_fleet.dev.stack import FleetStack, ServiceProcess

SECONDS = float(os.environ.get("RELIABILITY_SOAK_SECONDS", "60"))

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(SECONDS + 180)]
if SECONDS > 120:
    pytestmark.append(pytest.mark.soak)

WARMUP = max(15.0, SECONDS * 0.2)


def sample(procs: list[ServiceProcess]) -> list[tuple[int, int]]:
    return [(rss_kb(p.pid), open_fds(p.pid)) for p in procs]


def http_get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


async def test_soak_mixed_load_no_leak(fleet: FleetStack, figures: Figures) -> None:
    iface, workers = fleet.start(workers=2)
    procs = [iface, *workers]
    echoes = await open_echoes(iface, 60)
    readers = [asyncio.create_task(e.reader()) for e in echoes]
    stop = asyncio.Event()
    pacers = [asyncio.create_task(e.pace(5.0, stop)) for e in echoes]
    room = f"soak{time.monotonic_ns()}"
    members = [await ws(iface, f"/ws/room/{room}/?m{i}").__aenter__() for i in range(20)]
    counts = {"churn": 0, "churn_failed": 0, "http": 0, "http_failed": 0, "broadcasts": 0,
              "room_received": 0}

    async def drain_room(sock: object) -> None:
        try:
            async for _ in sock:  # type: ignore[attr-defined]
                counts["room_received"] += 1
        except Exception:
            pass

    room_readers = [asyncio.create_task(drain_room(m)) for m in members]

    async def broadcaster() -> None:
        while not stop.is_set():
            await members[0].send(f"b{counts['broadcasts']}")
            counts["broadcasts"] += 1
            await asyncio.sleep(1)

    async def churn() -> None:
        while not stop.is_set():
            try:
                async with ws(iface, "/ws/echo/churn/") as sock:
                    await whoami(sock)
                counts["churn"] += 1
            except Exception:
                counts["churn_failed"] += 1
            await asyncio.sleep(0.2)

    async def http_load() -> None:
        while not stop.is_set():
            try:
                status = await asyncio.to_thread(http_get, iface.port, "/hello/?name=soak")
                counts["http" if status == 200 else "http_failed"] += 1
            except Exception:
                counts["http_failed"] += 1
            await asyncio.sleep(0.2)

    tasks = [asyncio.create_task(f()) for f in (broadcaster, churn, http_load)]
    started = time.monotonic()
    samples: list[tuple[float, list[tuple[int, int]]]] = []
    while time.monotonic() - started < SECONDS:
        await asyncio.sleep(min(5.0, SECONDS / 12))
        samples.append((time.monotonic() - started, sample(procs)))
    stop.set()
    await asyncio.gather(*pacers, *tasks)
    await settle(echoes, 15)
    await asyncio.sleep(1)
    lost = sum(e.lost for e in echoes)
    closed = sum(e.closed_at is not None for e in echoes)
    sent = sum(e.sent for e in echoes)
    for sock in [e.sock for e in echoes] + members:
        await sock.close()
    await asyncio.gather(*readers, *room_readers)
    crashed = [p.kind for p in procs if p.popen.poll() is not None]

    base = next(s for t, s in samples if t >= WARMUP)
    end = samples[-1][1]
    growth = [((e[0] - b[0]) / 1024, e[1] - b[1]) for b, e in zip(base, end, strict=True)]
    per_min = [g[0] / max(1e-9, (SECONDS - WARMUP) / 60) for g in growth]
    # Flat means: under 8 MiB (or 10%) after the warm-up, and at most 5 more open files.
    rss_ok = all(g[0] <= max(8.0, b[0] / 1024 * 0.10) for g, b in zip(growth, base, strict=True))
    fds_ok = all(g[1] <= 5 for g in growth)
    load_ok = (lost == 0 and closed == 0 and counts["churn_failed"] == 0
               and counts["http_failed"] == 0 and not crashed)
    expected_room = counts["broadcasts"] * 20
    names = ["interface", "worker 1", "worker 2"]
    figures.record(
        "7. soak", f"{SECONDS:.0f} s mixed load: 60 echo sockets x 5 msg/s, 20-socket room with "
        f"a broadcast every second, 5 connects/s churn, 5 HTTP requests/s; 1 interface, "
        f"2 workers; warm-up {WARMUP:.0f} s",
        "RSS and open fds per process after the warm-up -> end (/proc/<pid>/status, fd)",
        "; ".join(f"{n} {b[0] // 1024}->{e[0] // 1024} MiB ({pm:+.1f} MiB/min), "
                  f"fds {b[1]}->{e[1]}"
                  for n, b, e, pm in zip(names, base, end, per_min, strict=True)),
        rss_ok and fds_ok, growth=growth)
    figures.record(
        "7. soak", f"the same {SECONDS:.0f} s", "messages lost, connects and requests failed",
        f"{lost} lost of {sent} echoes, {closed} sockets closed; {counts['churn']} churn "
        f"connects ({counts['churn_failed']} failed); {counts['http']} HTTP 200 "
        f"({counts['http_failed']} failed); room {counts['room_received']}/{expected_room} "
        f"broadcast deliveries; {len(crashed)} crashed", load_ok)
    assert load_ok, (lost, closed, counts, crashed)
    assert rss_ok, growth
    assert fds_ok, growth
