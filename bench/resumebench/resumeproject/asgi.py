"""``ws/member/<name>/``: an echo that is also a member of the group ``room-<name>`` (its
``room.message`` events are sent on), and counts its own connects and disconnects in the Redis
hash ``rbench:<name>`` (fields ``connect``, ``disconnect:<code>``), so the bench knows what the
app saw. One Redis client per process: 2,000 consumers connecting at once must not each open
their own (the split tests' consumer does, which is fine for a test's handful), and at most
``COUNTING`` counts are in flight at once (the client's pool raises when it runs dry)."""

import asyncio
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "resumeproject.settings")

import django  # noqa: E402

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402
from redis.asyncio.cluster import RedisCluster  # noqa: E402

COUNTING = 64
_store = None
_slots = None


async def count(name, field):
    global _store, _slots
    if _store is None:
        _store = RedisCluster.from_url(os.environ["CHANNELS_FLEET_REDIS_URL"].split(",")[0],
                                       max_connections=2 * COUNTING)
        _slots = asyncio.Semaphore(COUNTING)
    async with _slots:
        await _store.hincrby(f"rbench:{name}", field, 1)


class Member(AsyncWebsocketConsumer):
    async def connect(self):
        self.name = self.scope["url_route"]["kwargs"]["name"]
        self.room = f"room-{self.name}"
        await self.channel_layer.group_add(self.room, self.channel_name)
        await count(self.name, "connect")
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.send(text_data=text_data, bytes_data=bytes_data)

    async def room_message(self, event):
        await self.send(text_data=event["text"])

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.room, self.channel_name)
        await count(self.name, f"disconnect:{code}")


application = ProtocolTypeRouter({
    "websocket": URLRouter([path("ws/member/<str:name>/", Member.as_asgi())]),
})
