"""Posting into a room, from any process: straight to the room's group, or through the
``moderation`` background channel when ``CHAT_MODERATION`` is on (a worker must then run
``--channels moderation``)."""

from django.conf import settings

MAX_MESSAGE = 2000


def group_name(room: str) -> str:
    return f"chat_{room}"


def user_name(user) -> str | None:
    """The poster's name, or None for an anonymous user (who may read but not post, unless
    CHAT_GUEST_POSTS lets them post as "guest")."""
    if user is None or not user.is_authenticated:
        return "guest" if settings.CHAT_GUEST_POSTS else None
    return user.get_username()


async def post(layer, room: str, user: str, message: str, via: str) -> None:
    message = str(message)[:MAX_MESSAGE]
    if settings.CHAT_MODERATION:
        await layer.send("moderation", {"type": "moderate", "room": room, "user": user,
                                        "message": message, "via": via})
    else:
        await layer.group_send(group_name(room), {"type": "chat.message", "message": message,
                                                  "user": user})
