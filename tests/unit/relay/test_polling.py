"""The relay's polling loops end when stopped, even if their Redis client swallows the
cancellation (redis-py 8.2 can, when it lands inside a command)."""

from __future__ import annotations

import asyncio

from channels_fleet.relay.peer_watch import PeerWatch


class SwallowingClient:
    """A client whose commands eat a cancellation, as redis-py's sometimes do."""

    async def mget(self, keys: list[str]) -> list[bytes]:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            pass
        return [b"{}" for _ in keys]


async def test_peer_watch_stops_though_its_client_swallowed_the_cancel() -> None:
    watch = PeerWatch(SwallowingClient(), lambda: ["fleet.worker.x!1"], lambda dead: None,
                      interval=0.001, prefix="fleet")
    watch.start()
    await asyncio.sleep(0.05)
    await asyncio.wait_for(watch.stop(), 2)
