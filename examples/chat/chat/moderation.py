"""The ``moderation`` background channel (Channels 1.x's ``runworker --only-channels``): censors
the words of ``CHAT_BANNED_WORDS`` and posts the cleaned message to the room."""

import logging
import re

from channels.consumer import AsyncConsumer
from django.conf import settings

from .rooms import MAX_MESSAGE, group_name

logger = logging.getLogger(__name__)


def censor(text: str) -> str:
    words = [re.escape(w) for w in settings.CHAT_BANNED_WORDS if w]
    if not words:
        return text
    pattern = re.compile(r"\b(" + "|".join(words) + r")\b", re.IGNORECASE)
    return pattern.sub(lambda m: "*" * len(m.group(0)), text)


class Moderator(AsyncConsumer):
    async def moderate(self, event):
        try:
            room, user = str(event["room"]), str(event["user"])
            message = censor(str(event["message"])[:MAX_MESSAGE])
        except KeyError:
            logger.warning("moderation: malformed event %r", event)
            return
        await self.channel_layer.group_send(
            group_name(room), {"type": "chat.message", "message": message, "user": user})
