"""Daphne's per-connection walks, done in slices or only for what changed (server_costs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from hypothesis import given
from hypothesis import strategies as st


def test_autobahn_config_log__formatted_only_when_logged() -> None:
    import pprint

    from autobahn.websocket import protocol

    from channels_fleet.interface.server_costs import defer_config_log

    options = [("openHandshakeTimeout", 5, "WebSocketServerFactory")] * 3
    defer_config_log()
    deferred = protocol.pformat(options)
    assert not isinstance(deferred, str)  # nothing formatted yet
    assert f"\n{deferred}" == "\n" + pprint.pformat(options)  # what a debug line shows


def test_unformatted_debug__bytes_reach_the_parser_and_the_line_is_built_only_when_logged(
        monkeypatch) -> None:
    import txaio
    from autobahn.twisted import websocket

    from channels_fleet.interface.server_costs import UnformattedDebug

    class Protocol(UnformattedDebug, websocket.WebSocketServerProtocol):
        peer = "tcp:127.0.0.1:5000"

    built: list[object] = []
    monkeypatch.setattr(websocket, "hltype", lambda obj: built.append(obj) or "<func>")
    parsed: list[bytes] = []
    protocol = Protocol()
    monkeypatch.setattr(protocol, "_dataReceived", parsed.append)
    protocol.dataReceived(b"\x81\x85")
    assert parsed == [b"\x81\x85"] and built == []
    level = txaio.get_global_log_level()
    txaio.set_global_log_level("debug")
    try:
        protocol.dataReceived(b"more")
    finally:
        txaio.set_global_log_level(level)
    assert parsed == [b"\x81\x85", b"more"] and len(built) == 1  # autobahn's own, as before


@given(mask=st.binary(min_size=4, max_size=4), payload=st.binary(max_size=127),
       cuts=st.lists(st.integers(0, 127), max_size=4))
def test_small_frame_masker__unmasks_as_autobahn_does_in_any_pieces(mask, payload, cuts) -> None:
    from autobahn.nvx._xormasker import create_xor_masker

    from channels_fleet.interface.server_costs import SmallFrameMasker

    ours, theirs = SmallFrameMasker(mask), create_xor_masker(mask, len(payload))
    bounds = [0, *sorted(c for c in cuts if c < len(payload)), len(payload)]
    for start, end in zip(bounds, bounds[1:]):
        assert ours.process(payload[start:end]) == theirs.process(payload[start:end])
        assert ours.pointer() == theirs.pointer() == end
    ours.reset()
    assert ours.pointer() == 0 and ours.process(payload) == bytes(
        b ^ mask[i % 4] for i, b in enumerate(payload))


def test_cheap_small_masks__small_frames_ours_large_ones_autobahn_s() -> None:
    from autobahn.websocket import protocol

    from channels_fleet.interface.server_costs import SmallFrameMasker, cheap_small_masks

    cheap_small_masks()
    cheap_small_masks()  # once is enough: not wrapped twice
    assert isinstance(protocol.create_xor_masker(b"abcd", 20), SmallFrameMasker)
    large = protocol.create_xor_masker(b"abcd", 4096)
    assert not isinstance(large, SmallFrameMasker)
    assert large.process(b"\x00" * 8) == b"abcdabcd"


def test_sliced_timeouts__each_live_connection_checked_once() -> None:
    from channels_fleet.interface.server_costs import SlicedTimeouts

    checked: list[int] = []

    class Proto:
        def __init__(self, n: int) -> None:
            self.n = n

        def check_timeouts(self) -> None:
            checked.append(self.n)

    class Server(SlicedTimeouts):
        def __init__(self) -> None:
            self.connections = {Proto(n): {} for n in range(5)}

    server = Server()
    protocols = list(server.connections)
    del server.connections[protocols[3]]  # gone before its slice came
    server._check_slice(protocols[:3])
    server._check_slice(protocols[3:])
    assert checked == [0, 1, 2, 4]


def test_sliced_timeouts__no_slice_holds_more_than_its_size() -> None:
    from channels_fleet.interface.server_costs import SlicedTimeouts

    scheduled: list[tuple[float, int]] = []

    class Clock:
        def callLater(self, delay: float, func: object, *args: list) -> None:  # noqa: N802
            if args:
                scheduled.append((delay, len(args[0])))

    class Server(SlicedTimeouts):
        def __init__(self, n: int) -> None:
            self.connections = {object(): {} for _ in range(n)}

    import channels_fleet.interface.server_costs as costs

    real = costs._reactor
    costs._reactor = Clock  # type: ignore[assignment]
    try:
        Server(20_001).timeout_checker()
    finally:
        costs._reactor = real
    assert sum(size for _, size in scheduled) == 20_001
    assert max(size for _, size in scheduled) == SlicedTimeouts.SLICE_SIZE
    assert max(delay for delay, _ in scheduled) < SlicedTimeouts.TIMEOUT_PERIOD


# The real Daphne Server (importing daphne.server installs Twisted's reactor, so in a process of
# its own): the same connections, reaped by Daphne's walk and by ReapedOnChange.
REAPING = textwrap.dedent('''
    import asyncio, json
    import daphne.server
    from daphne.server import Server
    from channels_fleet.interface.server_costs import ReapedOnChange

    loop = daphne.server.twisted_loop
    asyncio.set_event_loop(loop)

    class Proto:
        def __init__(self, name):
            self.name, self.errors = name, []
        def handle_exception(self, exc):
            self.errors.append(repr(exc))

    async def app(scope, receive, send):
        if scope["ends"] == "raises":
            raise ValueError("boom")
        if scope["ends"] == "never":
            await asyncio.sleep(3600)

    CASES = {  # name: (how the app ends, socket closed)
        "returned, open": ("returns", False), "raised, open": ("raises", False),
        "raised, closed": ("raises", True), "returned, closed": ("returns", True),
        "running, closed": ("never", True), "running, open": ("never", False),
    }

    class Ours(ReapedOnChange, Server):
        reaps = 0
        def _reap(self, protocol):
            self.reaps += 1
            super()._reap(protocol)

    def outcome(cls, idle):
        server = cls(app, endpoints=["tcp:port=0:interface=127.0.0.1"],
                     application_close_timeout=0.05)
        server.connections = {}  # as Server.run starts it
        protos = {name: Proto(name) for name in CASES}
        quiet = [Proto(f"idle {n}") for n in range(idle)]
        for proto in [*protos.values(), *quiet]:
            server.protocol_connected(proto)
            server.create_application(proto, {"type": "websocket", "ends": "never"
                                              if proto in quiet else CASES[proto.name][0]})
        loop.run_until_complete(asyncio.sleep(0.01))
        for name, (_, closed) in CASES.items():
            if closed:
                server.protocol_disconnected(protos[name])
        loop.run_until_complete(asyncio.sleep(0.1))  # past application_close_timeout
        server.application_checker()
        loop.run_until_complete(asyncio.sleep(0.01))  # the cancelled app ends
        server.application_checker()
        state = {name: {"kept": p in server.connections,
                        "app": "application_instance" in server.connections.get(p, {}),
                        "errors": p.errors} for name, p in protos.items()}
        return state, getattr(server, "reaps", None), len(server.connections)

    print(json.dumps({"daphne": outcome(Server, 1000), "ours": outcome(Ours, 1000)}))
''')


def test_reaped_on_change__reaps_as_daphne_does_touching_only_what_changed() -> None:
    out = subprocess.run([sys.executable, "-c", REAPING], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    daphne, ours = result["daphne"], result["ours"]
    assert ours[0] == daphne[0]  # every case ends as Daphne's walk leaves it
    assert ours[0] == {
        "returned, open": {"kept": True, "app": False, "errors": []},
        "raised, open": {"kept": True, "app": False, "errors": ["ValueError('boom')"]},
        "raised, closed": {"kept": False, "app": False, "errors": []},
        "returned, closed": {"kept": False, "app": False, "errors": []},
        "running, closed": {"kept": False, "app": False, "errors": []},
        "running, open": {"kept": True, "app": True, "errors": []},
    }
    assert ours[2] == daphne[2] == 1003  # the 1,000 idle connections and the 3 kept
    # Two checks over 1,006 connections: ours looked at the 5 that changed (and the closed
    # one whose app it cancelled, again), never at the 1,000 idle ones.
    assert 5 <= ours[1] <= 12, ours[1]
