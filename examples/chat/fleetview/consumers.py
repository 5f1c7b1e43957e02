"""``/ws/fleet/``: the fleet's status, pushed every second to the page that asked, with which
interface and worker serve this very socket (it changes when the socket is re-homed)."""

import asyncio
import json

from channels.generic.websocket import AsyncWebsocketConsumer

from . import status

PERIOD = 1.0  # the heartbeats' own interval


class FleetConsumer(AsyncWebsocketConsumer):
    ticker = None

    async def connect(self):
        await self.accept()
        self.ticker = asyncio.ensure_future(self._tick())

    async def disconnect(self, code):
        if self.ticker is not None:
            self.ticker.cancel()

    async def receive(self, text_data=None, bytes_data=None):
        pass  # nothing to ask: the status comes every second

    async def _tick(self):
        fleet = self.scope.get("fleet") or {}
        you = {"interface": fleet.get("interface"), "worker": fleet.get("worker"),
               "rehomed": fleet.get("rehomed", 0)}
        while True:
            now = await asyncio.to_thread(status.current)
            await self.send(text_data=json.dumps({"type": "fleet", **now, "you": you}))
            await asyncio.sleep(PERIOD)
