"""Declaring a Binding: the model, its fields, who may do what, and pushing its changes.

See the package's docstring (``channels_fleet.binding``) for the whole picture.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import get_channel_layer
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save, pre_save

from ..bridge import run_sync
from .consumer import CREATE, DELETE, EVENT_TYPE, UPDATE, BindingConsumer

logger = logging.getLogger("channels_fleet.binding")

# (groups, layer message) ready to send.
Event = tuple[list[str], dict[str, Any]]
# Named here: inside Binding, ``list`` is the inbound action.
Events = list[Event]
Rows = list[dict[str, Any]]


def _jsonable(value: Any) -> Any:
    """Plain JSON types only, so that any layer serializer (msgpack, json) can carry it."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


class Binding:
    """Declare a model binding; subclassing connects the signals and builds ``consumer``.

    Set ``model``, ``stream``, and ``fields`` (a list, or ``"__all__"``) or ``exclude``;
    implement ``group_names(instance)`` and ``has_permission(user, action, pk)``. Override
    ``create`` / ``update`` / ``delete`` (they run in a thread, with ``self.user``) to add
    server-side rules, for example setting an owner.
    """

    model: ClassVar[type[models.Model]]
    stream: ClassVar[str | None] = None
    fields: ClassVar[Iterable[str] | str | None] = None
    exclude: ClassVar[Iterable[str] | None] = None
    channel_layer_alias: ClassVar[str] = DEFAULT_CHANNEL_LAYER
    # Read each row before it is saved, so that groups it leaves hear a "delete" (one query more).
    track_moves: ClassVar[bool] = False
    # Seconds a save may wait for its push to reach the layer.
    send_timeout: ClassVar[float] = 10.0
    # Most rows one "list" returns.
    max_list: ClassVar[int] = 500
    consumer_class: ClassVar[type[BindingConsumer]] = BindingConsumer
    consumer: ClassVar[type[BindingConsumer]]
    _field_map: ClassVar[dict[str, models.Field] | None] = None

    # Set per connection by the consumer.
    scope: dict
    user: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._field_map = None
        if getattr(cls, "model", None) is None:
            return  # An abstract intermediate binding.
        if (cls.fields is None) == (cls.exclude is None):
            raise TypeError(f"{cls.__qualname__} must set exactly one of fields or exclude")
        if cls.model._meta.apps.models_ready:
            cls.bound_fields()  # A typo in fields fails at import, not at the first save.
        cls.consumer = type(f"{cls.__name__}Consumer", (cls.consumer_class,),
                            {"binding_class": cls, "__module__": cls.__module__})
        uid = f"channels_fleet.binding:{cls.__module__}.{cls.__qualname__}"
        if cls.track_moves:
            pre_save.connect(cls._pre_save, sender=cls.model, weak=False, dispatch_uid=uid)
        post_save.connect(cls._post_save, sender=cls.model, weak=False, dispatch_uid=uid)
        post_delete.connect(cls._post_delete, sender=cls.model, weak=False, dispatch_uid=uid)

    # -- what to declare --------------------------------------------------------------------

    @classmethod
    def group_names(cls, instance: models.Model) -> Iterable[str]:
        """Groups that hear about changes to ``instance``."""
        raise NotImplementedError(f"{cls.__qualname__} must implement group_names(instance)")

    def has_permission(self, user: Any, action: str, pk: Any) -> bool:
        """May ``user`` do ``action`` (create/update/delete/subscribe/unsubscribe) on ``pk``?

        Runs in a thread, so it may query the database. The default refuses everything.
        """
        return False

    def subscription_group_names(self, pk: Any, data: dict) -> list[str]:
        """Groups joined by ``subscribe``: those of instance ``pk``, or with no pk, those of an
        unsaved instance built from ``data`` (``{"data": {"board": 3}}`` -> board 3's groups)."""
        if pk is not None:
            instance = self._get(pk)
        else:
            instance = self.model()
            self._assign(instance, data)
        return list(self.group_names(instance))

    # -- inbound: what the socket may do (run in a thread) ----------------------------------

    def list(self, data: dict) -> Rows:
        """Current rows whose bound fields equal ``data`` (``{"board": 3}``), at most
        ``max_list``: what a client asks for right after subscribing, to start from."""
        fields = self.bound_fields()
        unknown = {name: ["not a bound field"] for name in data if name not in fields}
        if unknown:
            raise ValidationError(unknown)
        lookups, errors = {}, {}
        for name, value in data.items():
            try:
                lookups[fields[name].attname] = fields[name].to_python(value)
            except ValidationError as exc:
                errors[name] = exc.messages
        if errors:
            raise ValidationError(errors)
        rows = self.model._default_manager.filter(**lookups).order_by("pk")[: self.max_list]
        return [{"pk": _jsonable(row.pk), "data": self.serialize_data(row)} for row in rows]


    def before_save(self, instance: models.Model, action: str) -> None:
        """Server-side rules for socket writes, after the client's data is set and before it is
        validated: ``instance.owner = self.user`` for example. Runs in a thread."""

    def create(self, data: dict) -> Any:
        instance = self.model()
        self._assign(instance, data)
        self.before_save(instance, CREATE)
        instance.full_clean()
        instance.save()
        return _jsonable(instance.pk)

    def update(self, pk: Any, data: dict) -> None:
        instance = self._get(pk)
        self._assign(instance, data)
        self.before_save(instance, UPDATE)
        instance.full_clean()
        instance.save()

    def delete(self, pk: Any) -> None:
        self._get(pk).delete()

    def _get(self, pk: Any) -> models.Model:
        try:
            pk = self.model._meta.pk.to_python(pk)
        except ValidationError:
            raise self.model.DoesNotExist(f"invalid pk {pk!r}") from None
        return self.model._default_manager.get(pk=pk)

    def _assign(self, instance: models.Model, data: dict) -> None:
        writable = self.writable_fields()
        refused = {name: ["not a writable field"] for name in data if name not in writable}
        if refused:
            raise ValidationError(refused)
        for name, value in data.items():
            # attname: a foreign key takes the related pk ("board": 3 sets board_id).
            setattr(instance, writable[name].attname, value)

    # -- fields -----------------------------------------------------------------------------

    @classmethod
    def model_label(cls) -> str:
        return cls.model._meta.label_lower

    @classmethod
    def bound_fields(cls) -> dict[str, models.Field]:
        """Concrete fields sent to clients (the pk travels separately), by name."""
        if cls._field_map is None:
            concrete = {f.name: f for f in cls.model._meta.concrete_fields if not f.primary_key}
            if cls.fields == "__all__":
                names = list(concrete)
            elif cls.fields is not None:
                names = list(cls.fields)
            else:
                names = [n for n in concrete if n not in set(cls.exclude or ())]
            unknown = [n for n in [*names, *(cls.exclude or ())] if n not in concrete]
            if unknown:
                raise TypeError(f"{cls.__qualname__}: {cls.model_label()} has no concrete "
                                f"field(s) {', '.join(unknown)}")
            cls._field_map = {n: concrete[n] for n in names}
        return cls._field_map

    @classmethod
    def writable_fields(cls) -> dict[str, models.Field]:
        return {n: f for n, f in cls.bound_fields().items() if f.editable}

    @classmethod
    def serialize_data(cls, instance: models.Model) -> dict[str, Any]:
        # value_from_object gives a foreign key's pk, not the related object.
        return _jsonable({n: f.value_from_object(instance) for n, f in cls.bound_fields().items()})

    # -- outbound: pushing changes ----------------------------------------------------------

    @classmethod
    def event(cls, instance: models.Model, action: str,
              groups: Iterable[str] | None = None) -> Event:
        """The groups and layer message announcing ``action`` on ``instance``, built now."""
        message = {"type": EVENT_TYPE, "model": cls.model_label(), "action": action,
                   "pk": _jsonable(instance.pk), "data": cls.serialize_data(instance)}
        return list(cls.group_names(instance) if groups is None else groups), message

    @classmethod
    def push(cls, instances: Iterable[models.Model], action: str = UPDATE,
             using: str | None = None) -> None:
        """Announce changes Django sent no signal for (for example after ``bulk_create``)."""
        cls._send_on_commit([cls.event(i, action) for i in instances], using)

    @classmethod
    @contextmanager
    def bulk(cls, queryset: models.QuerySet) -> Iterator[models.QuerySet]:
        """Push what happens to ``queryset``'s rows inside the block, signals or not.

        ``with CardBinding.bulk(Card.objects.filter(column="todo")) as cards:
               cards.update(column="done")``

        On entry the rows' groups and data are noted; on exit each row still there is pushed as
        ``update`` (and as ``delete`` to groups it left), each row gone as ``delete``. Rows the
        block creates are not seen: ``push()`` those.
        """
        before = {obj.pk: cls.event(obj, DELETE) for obj in queryset.all().iterator()}
        yield queryset
        events: Events = []
        now = cls.model._default_manager.using(queryset.db).filter(pk__in=list(before))
        for obj in now.iterator():
            old_groups, gone_msg = before.pop(obj.pk)
            groups, message = cls.event(obj, UPDATE)
            events.append((groups, message))
            left = [g for g in old_groups if g not in groups]
            if left:
                events.append((left, gone_msg))
        events.extend(before.values())  # Deleted inside the block.
        cls._send_on_commit(events, queryset.db)

    @classmethod
    def _pre_save(cls, sender: type, instance: models.Model, raw: bool = False,
                  using: str | None = None, **kwargs: Any) -> None:
        if raw or instance._state.adding or instance.pk is None:
            return
        old = cls.model._default_manager.using(using).filter(pk=instance.pk).first()
        if old is not None:
            instance.__dict__[cls._stash_key()] = cls.event(old, DELETE)

    @classmethod
    def _post_save(cls, sender: type, instance: models.Model, created: bool = False,
                   raw: bool = False, using: str | None = None, **kwargs: Any) -> None:
        before = instance.__dict__.pop(cls._stash_key(), None)
        if raw:
            return  # loaddata: fixtures are not live changes.
        groups, message = cls.event(instance, CREATE if created else UPDATE)
        events = [(groups, message)]
        if before is not None:
            left = [g for g in before[0] if g not in groups]
            if left:
                events.append((left, before[1]))
        cls._send_on_commit(events, using)

    @classmethod
    def _stash_key(cls) -> str:
        # Per binding class: two bindings of one model must not read each other's notes.
        return f"_channels_fleet_before_{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def _post_delete(cls, sender: type, instance: models.Model, using: str | None = None,
                     **kwargs: Any) -> None:
        # Built now: after the signal Django clears the instance's pk.
        cls._send_on_commit([cls.event(instance, DELETE)], using)

    @classmethod
    def _send_on_commit(cls, events: Events, using: str | None) -> None:
        # Clients must never see a change that is then rolled back.
        if events:
            transaction.on_commit(lambda: cls.send_events(events), using=using)

    @classmethod
    def send_events(cls, events: Events) -> None:
        """Send now, from sync code (a view, a signal, a thread of database_sync_to_async)."""
        layer = get_channel_layer(cls.channel_layer_alias)
        if layer is None:
            logger.warning("binding %s: no channel layer %r configured; %d change(s) not pushed",
                           cls.__qualname__, cls.channel_layer_alias, len(events))
            return

        async def send_all() -> None:
            # In order: one client sees one row's changes in the order they happened.
            for groups, message in events:
                for group in groups:
                    await layer.group_send(group, message)

        try:
            run_sync(send_all, timeout=cls.send_timeout)
        except Exception:
            # The row is saved; failing the caller's request would not unsave it.
            logger.exception("binding %s: pushing %d change(s) failed",
                             cls.__qualname__, len(events))
