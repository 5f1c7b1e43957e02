"""Scenario 5: bad input at the edge.

10,000 malformed, oversized, invalid-UTF-8 and fragmented frames written on raw TCP sockets,
valid-but-oversized messages from the ``websockets`` library, slow handshakes (headers dribbled),
huge headers, more connections from one address than ``CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT``
and unknown paths. Figures: 0 crashed processes, 0 tracebacks sent to clients, RSS before/after,
one log line per refusal.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from typing import Any

import pytest
from rawws import HUNG, RESET, frame, handshake, read_close, shut
from relfigures import Figures
from relload import log_count, open_fds, rss_kb, whoami, ws
from websockets.exceptions import ConnectionClosed, InvalidStatus

from channels_fleet.dev.stack import FleetStack, ServiceProcess

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

FRAMES = int(os.environ.get("RELIABILITY_BAD_FRAMES", "10000"))
PER_CONN = 40
LEAKS = (b"Traceback", b'File "', b"Error(")

TEXT, BINARY, CONT, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


def frames_for(kind: str) -> tuple[list[bytes], set[int | None]]:
    """PER_CONN frames of one kind of bad input and the close codes acceptable for it."""
    frag = [frame(TEXT, b"start", fin=False)] + [frame(CONT, b"more", fin=False)
                                                 for _ in range(PER_CONN - 2)]
    if kind == "reserved bits":
        return frag + [frame(CONT, b"x", rsv=1)], {1002}
    if kind == "unknown opcode":
        return frag + [frame(0x3, b"x")], {1002}
    if kind == "unmasked":
        return frag + [frame(CONT, b"x", mask=False)], {1002}
    if kind == "long control frame":
        return frag + [frame(PING, b"p" * 200)], {1002}
    if kind == "invalid utf-8":
        return frag + [frame(CONT, b"\xff\xfe\xfd")], {1007}
    if kind == "continuation first":
        return [frame(CONT, b"orphan")] + frag[1:] + [frame(CONT, b"x")], {1002}
    if kind == "data inside fragments":
        return frag + [frame(BINARY, b"x")], {1002}
    if kind == "lying length":
        return frag + [frame(CONT, b"tiny", fin=False, length=1 << 62)], {1009, 1002}
    if kind == "oversized fragments":
        big = [frame(BINARY, b"a" * 65536, fin=False)] + [
            frame(CONT, b"a" * 65536, fin=False) for _ in range(PER_CONN - 1)]
        return big, {1009}
    if kind == "bad close code":
        return frag[:-1] + [frame(TEXT, b"ok"), frame(CLOSE, b"\x03\xe7")], {1002}
    raise AssertionError(kind)


KINDS = ["reserved bits", "unknown opcode", "unmasked", "long control frame", "invalid utf-8",
         "continuation first", "data inside fragments", "lying length", "oversized fragments",
         "bad close code"]


async def bad_connection(port: int, kind: str) -> tuple[str, Any, bytes, int]:
    frames, _ = frames_for(kind)
    try:
        reader, writer, head = await handshake(port, "/ws/echo/bad/")
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return kind, -1, repr(exc).encode(), 0
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        await shut(writer)
        return kind, -2, head, 0
    sent = 0
    try:
        for f in frames:
            writer.write(f)
            sent += 1
        await writer.drain()
    except ConnectionError:
        pass
    code, data = await read_close(reader)
    await shut(writer)
    return kind, code, head + data, sent


def procs_alive(procs: list[ServiceProcess]) -> list[str]:
    return [f"{p.kind} {p.pid} exited {p.popen.returncode}" for p in procs
            if p.popen.poll() is not None]


def memory(procs: list[ServiceProcess]) -> list[tuple[int, int]]:
    return [(rss_kb(p.pid), open_fds(p.pid)) for p in procs]


async def echo_ok(iface: ServiceProcess) -> bool:
    async with ws(iface, "/ws/echo/good/") as sock:
        await sock.send("still fine")
        return await asyncio.wait_for(sock.recv(), 10) == "still fine"


async def test_bad_frames_oversized_slowloris_headers_paths(fleet: FleetStack, figures: Figures
                                                             ) -> None:
    iface, workers = fleet.start(workers=2)
    procs = [iface, *workers]
    assert await echo_ok(iface)
    before = memory(procs)

    # 1. Raw bad frames: PER_CONN frames a connection, the kinds in turn.
    conns = max(len(KINDS), FRAMES // PER_CONN)
    gate = asyncio.Semaphore(25)

    async def one(i: int) -> tuple[str, Any, bytes, int]:
        async with gate:
            return await bad_connection(iface.port, KINDS[i % len(KINDS)])

    started = time.monotonic()
    results = await asyncio.gather(*(one(i) for i in range(conns)))
    frames_elapsed = time.monotonic() - started
    sent_frames = sum(r[3] for r in results)
    by_kind: dict[str, collections.Counter[Any]] = collections.defaultdict(collections.Counter)
    for kind, code, _, _ in results:
        by_kind[kind][code] += 1
    # A reset instead of the close frame is what a real client sees as 1006: counted, allowed.
    wrong = {k: dict(c) for k, c in by_kind.items() if set(c) - frames_for(k)[1] - {RESET}}
    resets = sum(c[RESET] for c in by_kind.values())
    hung = sum(c[HUNG] for c in by_kind.values())
    leaked = sum(any(m in data for m in LEAKS) for _, _, data, _ in results)

    # 2. Valid but oversized messages (2 MiB > Daphne's 1 MiB limit), websockets library.
    oversized_codes = []
    for _ in range(20):
        async with ws(iface, "/ws/echo/big/", max_size=None) as sock:
            await sock.send(b"z" * (2 * 1024 * 1024))
            try:
                await asyncio.wait_for(sock.recv(), 10)
                oversized_codes.append(None)
            except ConnectionClosed as exc:
                oversized_codes.append(exc.rcvd.code if exc.rcvd else 1006)
                leaked += bool(exc.rcvd and "Traceback" in (exc.rcvd.reason or ""))

    # 3. Huge headers: 64 KiB in one header, and 600 small ones.
    huge_status = []
    for extra in ("X-Big: " + "b" * 65536 + "\r\n",
                  "".join(f"X-H{i}: v\r\n" for i in range(600))):
        for _ in range(10):
            try:
                reader, writer, head = await handshake(iface.port, "/ws/echo/h/", extra)
                rest = await asyncio.wait_for(reader.read(65536), 5)
                await shut(writer)
            except (asyncio.IncompleteReadError, ConnectionError, TimeoutError) as exc:
                head, rest = getattr(exc, "partial", b"") or b"", b""
            status = head.split(b" ", 2)[1].decode() if head.count(b" ") >= 2 else "closed"
            huge_status.append(status)
            leaked += any(m in head + rest for m in LEAKS)

    # 4. Unknown paths: WebSocket and HTTP.
    unknown_ws = collections.Counter()
    for i in range(50):
        try:
            async with ws(iface, f"/ws/nope/{i}/") as sock:
                await sock.recv()
        except InvalidStatus as exc:
            unknown_ws[exc.response.status_code] += 1
            leaked += any(m in (exc.response.body or b"") for m in LEAKS)
        except ConnectionClosed as exc:
            unknown_ws[exc.rcvd.code if exc.rcvd else 1006] += 1
    unknown_http = collections.Counter()
    for i in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", iface.port)
        writer.write(f"GET /nope/{i}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                     .encode())
        body = await asyncio.wait_for(reader.read(), 10)
        await shut(writer)
        unknown_http[body.split(b" ", 2)[1].decode()] += 1
        leaked += any(m in body for m in LEAKS)

    # 5. Slowloris: 100 handshakes dribbled a byte every 0.5 s while a normal client echoes.
    dribblers = []
    for _ in range(100):
        _, writer = await asyncio.open_connection("127.0.0.1", iface.port)
        writer.write(b"GET /ws/echo/slow/ HTTP/1.1\r\n")
        dribblers.append(writer)
    waits = []
    async with ws(iface, "/ws/echo/during/") as sock:
        for round_ in range(16):
            for writer in dribblers:
                writer.write(b"X")
            t0 = time.monotonic()
            await sock.send(f"r{round_}")
            assert await asyncio.wait_for(sock.recv(), 10) == f"r{round_}"
            waits.append(time.monotonic() - t0)
            await asyncio.sleep(0.5)
    held = sum(not w.is_closing() for w in dribblers)
    for writer in dribblers:
        await shut(writer)

    await asyncio.sleep(1)
    crashed = procs_alive(procs)
    after = memory(procs)
    still_ok = await echo_ok(iface)
    worker_tracebacks = sum(log_count(w, "Traceback") for w in workers)
    route_lines = sum(log_count(w, "no route for") for w in workers)
    rss_growth = [(a[0] - b[0]) // 1024 for a, b in zip(after, before, strict=True)]

    run = (f"1 interface, 2 workers; {conns} raw connections x {PER_CONN} frames "
           f"({sent_frames} frames, {len(KINDS)} kinds) 25 at a time, 20 x 2 MiB messages, "
           f"20 huge-header handshakes, 50 + 50 unknown paths, 100 slowloris handshakes")
    figures.record("5. bad input", run, "close code per kind of bad frame",
                   f"{sent_frames} frames in {frames_elapsed:.1f} s; "
                   + "; ".join(f"{k}: {dict(c)}" for k, c in by_kind.items())
                   + f"; 2 MiB messages: {dict(collections.Counter(oversized_codes))}; "
                   f"{resets} reset before the close frame, {hung} hung",
                   not wrong and set(oversized_codes) == {1009})
    figures.record("5. bad input", run, "crashed processes; tracebacks sent to clients",
                   f"{len(crashed)} crashed; {leaked} responses or close reasons with a traceback; "
                   f"echo afterwards {'ok' if still_ok else 'FAILED'}",
                   not crashed and leaked == 0 and still_ok)
    figures.record("5. bad input", run, "RSS / open fds per process before -> after (MiB growth)",
                   ", ".join(f"{p.kind} {b[0] // 1024}->{a[0] // 1024} MiB, fds {b[1]}->{a[1]}"
                             for p, b, a in zip(procs, before, after, strict=True)),
                   max(rss_growth) < 64)
    figures.record("5. bad input", run, "huge headers; unknown paths; slowloris",
                   f"huge headers: {dict(collections.Counter(huge_status))}; unknown WS paths: "
                   f"{dict(unknown_ws)}, unknown HTTP paths: {dict(unknown_http)}; worker log: "
                   f"{route_lines} 'no route for' lines, {worker_tracebacks} tracebacks; "
                   f"slowloris: {held}/100 still held after 8 s, a normal echo took at most "
                   f"{max(waits) * 1000:.0f} ms meanwhile",
                   "101" not in huge_status and set(unknown_http) == {"404"}
                   and max(waits) < 2.0 and worker_tracebacks == 0
                   and route_lines == sum(unknown_ws.values()))
    assert not wrong, wrong
    assert set(oversized_codes) == {1009}, oversized_codes
    assert not crashed, crashed
    assert leaked == 0
    # One clear log line per refused unknown path, no traceback.
    assert worker_tracebacks == 0, worker_tracebacks
    assert route_lines == sum(unknown_ws.values()), (route_lines, unknown_ws)
    assert still_ok
    assert max(rss_growth) < 64, rss_growth
    assert "101" not in huge_status, huge_status
    assert set(unknown_http) == {"404"}, unknown_http
    assert max(waits) < 2.0, waits


async def test_connections_per_client_limit(fleet: FleetStack, figures: Figures) -> None:
    iface = fleet.interface(wait=False, CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT="20")
    fleet.worker()
    iface.wait_ready()
    socks, refused = [], collections.Counter()
    for _ in range(30):
        try:
            sock = await ws(iface, "/ws/echo/many/").__aenter__()
            await whoami(sock)
            socks.append(sock)
        except InvalidStatus as exc:
            refused[exc.response.status_code] += 1
    reader, writer = await asyncio.open_connection("127.0.0.1", iface.port)
    writer.write(b"GET /hello/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    http_over = (await asyncio.wait_for(reader.read(), 10)).split(b" ", 2)[1].decode()
    await shut(writer)
    await socks[0].close()
    await asyncio.sleep(0.3)
    async with ws(iface, "/ws/echo/after/") as sock:  # room again once one closed
        freed = await whoami(sock) > 0
    for sock in socks[1:]:
        await sock.close()
    await asyncio.sleep(0.5)
    lines = log_count(iface, "CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT=20")
    ok = len(socks) == 20 and refused == {403: 10} and http_over == "429" and lines == 11 and freed
    figures.record("5. bad input: per-client limit",
                   "CHANNELS_FLEET_MAX_CONNECTIONS_PER_CLIENT=20; 30 WebSockets + 1 HTTP request "
                   "from 127.0.0.1, then one more socket after one closed",
                   "accepted / refused; refusal log lines",
                   f"{len(socks)} accepted, refused {dict(refused)}, HTTP over the limit "
                   f"{http_over}, {lines} log lines for 11 refusals, accepted again after a close: "
                   f"{freed}", ok)
    assert len(socks) == 20 and refused == {403: 10}
    assert http_over == "429"
    assert lines == 11
    assert freed
