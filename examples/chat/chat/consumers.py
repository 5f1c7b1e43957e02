"""The chat room: a plain AsyncWebsocketConsumer with a group per room."""

import json

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat_{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code):
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data=None, bytes_data=None):
        try:
            message = str(json.loads(text_data)["message"])[:2000]
        except (TypeError, ValueError, KeyError):
            return
        user = self.scope.get("user")
        name = user.username if user is not None and user.is_authenticated else "anonymous"
        await self.channel_layer.group_send(
            self.group, {"type": "chat.message", "message": message, "user": name}
        )

    async def chat_message(self, event):
        await self.send(text_data=json.dumps({"message": event["message"], "user": event["user"]}))
