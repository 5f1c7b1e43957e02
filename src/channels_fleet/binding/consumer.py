"""The socket side of a Binding: a JSON WebSocket consumer taking the inbound actions.

``{"action": "create"|"update"|"delete"|"subscribe"|"unsubscribe"|"list", "pk": .., "data": {..}}``,
each checked by the binding's ``has_permission(user, action, pk)``; bad input is an error
frame, never an exception that closes the socket. ``Binding`` subclasses build theirs
(``CardBinding.consumer``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any, ClassVar, Protocol

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import ObjectDoesNotExist, ValidationError

logger = logging.getLogger("channels_fleet.binding")

CREATE, UPDATE, DELETE = "create", "update", "delete"
SUBSCRIBE, UNSUBSCRIBE, LIST = "subscribe", "unsubscribe", "list"

# The layer message type; BindingConsumer.binding_change handles it.
EVENT_TYPE = "binding.change"


class Actions(Protocol):
    """What the consumer asks of its binding (``Binding`` is one)."""

    user: Any
    scope: dict

    @classmethod
    def model_label(cls) -> str: ...
    def has_permission(self, user: Any, action: str, pk: Any) -> bool: ...
    def subscription_group_names(self, pk: Any, data: dict) -> list[str]: ...
    def list(self, data: dict) -> list[dict[str, Any]]: ...
    def create(self, data: dict) -> Any: ...
    def update(self, pk: Any, data: dict) -> None: ...
    def delete(self, pk: Any) -> None: ...


class BindingConsumer(AsyncJsonWebsocketConsumer):
    """The inbound side of a Binding: one instance per socket (or per Demultiplexer stream)."""

    binding_class: ClassVar[type[Actions]]
    actions = (CREATE, UPDATE, DELETE, SUBSCRIBE, UNSUBSCRIBE, LIST)
    # Groups one socket may be in: each is a Redis entry until the socket goes.
    max_subscriptions = 100

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.binding = self.binding_class()
        self.subscribed: set[str] = set()

    async def websocket_connect(self, message: dict) -> None:
        # Before connect(), so an overridden connect() sees them too.
        self.binding.scope = self.scope
        self.binding.user = self.scope.get("user")
        await super().websocket_connect(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None,
                      **kwargs: Any) -> None:
        # Bad input becomes an error frame, never an exception that closes the socket.
        try:
            content = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # RecursionError: absurd nesting
            content = None
        if not isinstance(content, dict):
            await self.send_json({"error": "malformed frame", "detail": "expected a JSON object"})
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs: Any) -> None:
        action, pk, data = content.get("action"), content.get("pk"), content.get("data", {})
        reply: dict[str, Any] = {"action": action, "pk": pk}
        if "request_id" in content:
            reply["request_id"] = content["request_id"]
        if action not in self.actions:
            await self.send_json({**reply, "error": "unknown action"})
            return
        if not isinstance(data, dict):
            await self.send_json({**reply, "error": "invalid data", "detail": "not an object"})
            return
        try:
            allowed = await database_sync_to_async(self.binding.has_permission)(
                self.binding.user, action, pk)
            if not allowed:
                await self.send_json({**reply, "error": "permission denied"})
                return
            if action in (SUBSCRIBE, UNSUBSCRIBE):
                find_groups = database_sync_to_async(self.binding.subscription_group_names)
                groups = await find_groups(pk, data)
                too_many = len(self.subscribed | set(groups)) > self.max_subscriptions
                if action == SUBSCRIBE and too_many:
                    await self.send_json({**reply, "error": "too many subscriptions"})
                    return
                await (self._subscribe if action == SUBSCRIBE else self._unsubscribe)(groups)
            elif action == LIST:
                reply["items"] = await database_sync_to_async(self.binding.list)(data)
            elif action == CREATE:
                reply["pk"] = await database_sync_to_async(self.binding.create)(data)
            elif action == UPDATE:
                await database_sync_to_async(self.binding.update)(pk, data)
            else:
                await database_sync_to_async(self.binding.delete)(pk)
        except ObjectDoesNotExist:
            await self.send_json({**reply, "error": "not found"})
        except ValidationError as exc:
            errors = exc.message_dict if hasattr(exc, "error_dict") else {"__all__": exc.messages}
            await self.send_json({**reply, "error": "invalid data", "errors": errors})
        except Exception:
            logger.exception("binding %s: %s pk=%r failed", self.binding_class.__name__, action, pk)
            await self.send_json({**reply, "error": "server error"})
        else:
            await self.send_json({**reply, "response": "ok"})

    async def _subscribe(self, groups: Iterable[str]) -> None:
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
            self.subscribed.add(group)

    async def _unsubscribe(self, groups: Iterable[str]) -> None:
        for group in groups:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.subscribed.discard(group)

    async def disconnect(self, code: int) -> None:
        await self._unsubscribe(list(self.subscribed))

    async def binding_change(self, event: dict) -> None:
        """A change pushed by Binding through a group this socket subscribed to."""
        if event.get("model") != self.binding_class.model_label():
            return  # Another binding sharing the group name.
        await self.send_json({k: event[k] for k in ("action", "pk", "data", "model")})
