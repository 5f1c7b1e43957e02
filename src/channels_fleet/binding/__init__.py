"""Two-way model data binding, Channels 1.x's ``WebsocketBinding`` on Channels 4.

Outbound: a model saved or deleted through Django (any process whose settings point
``CHANNEL_LAYERS`` at the shared layer: a worker, a background channel, gunicorn) is pushed to the
groups ``group_names(instance)`` as ``{"action", "pk", "data", "model"}``. Inbound:
``Binding.consumer`` is a JSON WebSocket consumer (standalone, or a ``Demultiplexer`` stream) taking
``{"action": "create"|"update"|"delete"|"subscribe"|"unsubscribe"|"list", "pk": .., "data": {..}}``,
each checked by ``has_permission(user, action, pk)``.

Example::

    class CardBinding(Binding):
        model = Card
        stream = "cards"
        fields = ["title", "column", "board"]

        @classmethod
        def group_names(cls, instance):
            return [f"board-{instance.board_id}"]

        def has_permission(self, user, action, pk):
            return user is not None and user.is_authenticated

Limits (as in Channels 1.x): only changes that send Django's ``post_save`` / ``post_delete``
signals are pushed. ``QuerySet.update()``, ``bulk_create()``, ``bulk_update()``, raw SQL and writes
from outside Django are not; wrap them in ``Binding.bulk(queryset)`` or call ``Binding.push()``.
"""

from .consumer import BindingConsumer
from .core import Binding

__all__ = ["Binding", "BindingConsumer"]
