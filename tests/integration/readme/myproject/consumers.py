import os

from channels.generic.websocket import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """Everything received goes to every socket of the room, as "<worker pid>:<text>"."""

    async def connect(self):
        await self.channel_layer.group_add("room", self.channel_name)
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        await self.channel_layer.group_send("room", {"type": "chat.message", "text": text_data})

    async def chat_message(self, event):
        await self.send(f"{os.getpid()}:{event['text']}")

    async def disconnect(self, code):
        await self.channel_layer.group_discard("room", self.channel_name)
