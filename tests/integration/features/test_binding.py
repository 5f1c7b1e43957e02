"""Binding: Django changes pushed to subscribers, writes through the socket; real Redis."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.bindingapp.djangosetup import create_tables, setup

setup()

from channels.db import database_sync_to_async  # noqa: E402
from channels.testing import WebsocketCommunicator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth.models import AnonymousUser, User  # noqa: E402
from django.db import transaction  # noqa: E402
from support.bindingapp.bindings import CardBinding, NoteBinding  # noqa: E402
from support.bindingapp.fixtures import layer_backend, layer_fixture  # noqa: E402, F401  ("layer")
from support.bindingapp.models import Board, Card, Note  # noqa: E402

from channels_fleet.binding import Binding  # noqa: E402
from channels_fleet.multiplex import Demultiplexer  # noqa: E402

pytestmark = pytest.mark.timeout(30)

MEMBER = User(username="member")
STAFF = User(username="boss", is_staff=True)


@pytest.fixture(autouse=True)
def tables():
    create_tables()
    yield
    for model in (Card, Note, Board):
        model.objects.all().delete()


@pytest.fixture
def board():
    return Board.objects.create(name="main")


async def socket(binding=CardBinding, user=MEMBER):
    comm = WebsocketCommunicator(binding.consumer.as_asgi(), "/ws/cards/")
    comm.scope["user"] = user
    ok, _ = await comm.connect()
    assert ok
    return comm


async def subscribed(board, user=MEMBER):
    comm = await socket(user=user)
    await comm.send_json_to({"action": "subscribe", "data": {"board": board.pk}})
    assert await comm.receive_json_from() == {
        "action": "subscribe", "pk": None, "response": "ok"}
    return comm


async def test_save_and_delete_in_django__pushed_to_subscribers(layer, board):
    comm = await subscribed(board)
    card = await database_sync_to_async(Card.objects.create)(board=board, title="a", secret="s")
    push = await comm.receive_json_from()
    assert push["action"] == "create" and push["pk"] == card.pk
    assert push["model"] == "bindingapp.card"
    # fields is respected: no pk inside data, no "secret".
    assert set(push["data"]) == {"board", "title", "column", "created"}
    assert push["data"]["board"] == board.pk and push["data"]["title"] == "a"

    card.title = "b"
    await database_sync_to_async(card.save)()
    push = await comm.receive_json_from()
    assert (push["action"], push["pk"], push["data"]["title"]) == ("update", card.pk, "b")

    pk = card.pk
    await database_sync_to_async(card.delete)()
    push = await comm.receive_json_from()
    assert (push["action"], push["pk"], push["data"]["title"]) == ("delete", pk, "b")
    await comm.disconnect()


async def test_push_only_reaches_the_instance_groups(layer, board):
    other = await database_sync_to_async(Board.objects.create)(name="other")
    comm = await subscribed(board)
    await database_sync_to_async(Card.objects.create)(board=other, title="elsewhere")
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_rolled_back_change__not_pushed(layer, board):
    comm = await subscribed(board)

    @database_sync_to_async
    def create_then_fail():
        with pytest.raises(RuntimeError), transaction.atomic():
            Card.objects.create(board=board, title="never")
            raise RuntimeError("rollback")

    await create_then_fail()
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_change_made_by_another_process__pushed(layer, board, project_root: Path):
    """A plain Django process (as gunicorn's web tier is) saving a model reaches the socket."""
    comm = await subscribed(board)
    env = dict(
        os.environ,
        DJANGO_SETTINGS_MODULE="support.bindingapp.settings",
        PYTHONPATH=os.pathsep.join([str(project_root / "tests"),
                                    str(project_root / "src")]),
        BINDINGAPP_DB=str(settings.DATABASES["default"]["NAME"]),
        BINDINGAPP_LAYER=layer_backend(),
        BINDINGAPP_HOSTS=",".join(layer.test_hosts),
        BINDINGAPP_PREFIX=layer.prefix,
    )
    script = (
        "import django; django.setup()\n"
        "from support.bindingapp.models import Card\n"
        f"print(Card.objects.create(board_id={board.pk}, title='from the web tier').pk)\n"
    )
    proc = await database_sync_to_async(subprocess.run)(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 0, proc.stderr
    push = await comm.receive_json_from(timeout=5)
    assert push["action"] == "create" and push["pk"] == int(proc.stdout.strip())
    assert push["data"]["title"] == "from the web tier"
    await comm.disconnect()


async def test_create_update_through_socket__saved_and_pushed_to_others(layer, board):
    watcher = await subscribed(board)
    writer = await socket()
    await writer.send_json_to({"action": "create", "request_id": 7,
                               "data": {"board": board.pk, "title": "from socket"}})
    ack = await writer.receive_json_from()
    assert ack["response"] == "ok" and ack["request_id"] == 7
    card = await database_sync_to_async(Card.objects.get)(pk=ack["pk"])
    assert (card.title, card.column, card.board_id) == ("from socket", "todo", board.pk)
    push = await watcher.receive_json_from()
    assert (push["action"], push["pk"]) == ("create", card.pk)

    await writer.send_json_to({"action": "update", "pk": card.pk, "data": {"column": "done"}})
    assert (await writer.receive_json_from())["response"] == "ok"
    await card.arefresh_from_db()
    assert (card.title, card.column) == ("from socket", "done")
    push = await watcher.receive_json_from()
    assert (push["action"], push["data"]["column"]) == ("update", "done")
    await writer.disconnect()
    await watcher.disconnect()


async def test_delete_through_socket__refused_then_allowed(layer, board):
    card = await database_sync_to_async(Card.objects.create)(board=board, title="keep")
    member = await socket(user=MEMBER)
    await member.send_json_to({"action": "delete", "pk": card.pk})
    assert await member.receive_json_from() == {
        "action": "delete", "pk": card.pk, "error": "permission denied"}
    assert await database_sync_to_async(Card.objects.filter(pk=card.pk).exists)()

    boss = await socket(user=STAFF)
    await boss.send_json_to({"action": "delete", "pk": card.pk})
    assert (await boss.receive_json_from())["response"] == "ok"
    assert not await database_sync_to_async(Card.objects.filter(pk=card.pk).exists)()
    await member.disconnect()
    await boss.disconnect()


@pytest.mark.parametrize("action", ["create", "update", "subscribe", "list"])
async def test_anonymous_user__every_action_refused(layer, board, action):
    comm = await socket(user=AnonymousUser())
    await comm.send_json_to({"action": action, "pk": None,
                             "data": {"board": board.pk, "title": "x"}})
    assert (await comm.receive_json_from())["error"] == "permission denied"
    assert await database_sync_to_async(Card.objects.count)() == 0
    await comm.disconnect()


@pytest.mark.parametrize("frame, error", [
    ({"action": "create", "data": {"board": 0, "title": "x", "secret": "s"}},
     {"error": "invalid data", "errors": {"secret": ["not a writable field"]}}),
    ({"action": "create", "data": {"board": 0, "title": "x", "created": "2020-01-01"}},
     {"error": "invalid data", "errors": {"created": ["not a writable field"]}}),
    ({"action": "update", "pk": 999999, "data": {"title": "x"}}, {"error": "not found"}),
    ({"action": "update", "pk": "abc", "data": {"title": "x"}}, {"error": "not found"}),
    ({"action": "create", "data": "title"}, {"error": "invalid data", "detail": "not an object"}),
    ({"action": "explode"}, {"error": "unknown action"}),
])
async def test_bad_request__error_frame_and_nothing_written(layer, board, frame, error):
    comm = await socket()
    await comm.send_json_to(frame)
    reply = await comm.receive_json_from()
    assert {k: reply[k] for k in error} == error
    assert await database_sync_to_async(Card.objects.count)() == 0
    await comm.send_to(text_data="not json")
    assert (await comm.receive_json_from())["error"] == "malformed frame"
    await comm.disconnect()


async def test_invalid_values__field_errors(layer, board):
    comm = await socket()
    await comm.send_json_to({"action": "create", "data": {"board": board.pk, "title": ""}})
    reply = await comm.receive_json_from()
    assert reply["error"] == "invalid data" and set(reply["errors"]) == {"title"}
    await comm.send_json_to({"action": "create", "data": {"board": 424242, "title": "x"}})
    reply = await comm.receive_json_from()
    assert reply["error"] == "invalid data" and set(reply["errors"]) == {"board"}
    await comm.disconnect()


async def test_exclude__field_neither_sent_nor_writable(layer):
    comm = await socket(NoteBinding)
    await comm.send_json_to({"action": "subscribe", "data": {}})
    assert (await comm.receive_json_from())["response"] == "ok"
    await database_sync_to_async(Note.objects.create)(text="hello", private="hidden")
    push = await comm.receive_json_from()
    assert push["data"] == {"text": "hello"}
    await comm.send_json_to({"action": "update", "pk": push["pk"], "data": {"private": "x"}})
    assert (await comm.receive_json_from())["errors"] == {"private": ["not a writable field"]}
    await comm.disconnect()


async def test_unsubscribe__no_more_pushes(layer, board):
    comm = await subscribed(board)
    await comm.send_json_to({"action": "unsubscribe", "data": {"board": board.pk}})
    assert (await comm.receive_json_from())["response"] == "ok"
    await database_sync_to_async(Card.objects.create)(board=board, title="unheard")
    assert await comm.receive_nothing(0.3)
    await comm.disconnect()


async def test_bulk__queryset_update_pushed_and_moves_tell_old_group(layer, board):
    other = await database_sync_to_async(Board.objects.create)(name="other")
    await database_sync_to_async(Card.objects.bulk_create)(
        [Card(board=board, title=f"c{i}") for i in range(3)])
    here, there = await subscribed(board), await subscribed(other)

    @database_sync_to_async
    def bulk_changes():
        # QuerySet.update sends no signal: without bulk() nobody would hear of it.
        Card.objects.filter(title="c0").update(column="done")
        with CardBinding.bulk(Card.objects.filter(board=board)) as cards:
            cards.filter(title="c1").update(column="doing")
            cards.filter(title="c2").update(board=other)

    await bulk_changes()
    pushes = {}
    for _ in range(3):
        push = await here.receive_json_from()
        pushes[(push["data"]["title"], push["action"])] = push["data"]
    # Every row of the queryset is pushed, c0 too (its update before the block went unheard).
    assert pushes[("c0", "update")]["column"] == "done"
    assert pushes[("c1", "update")]["column"] == "doing"
    assert pushes[("c2", "delete")]["board"] == board.pk
    push = await there.receive_json_from()
    assert (push["action"], push["data"]["title"], push["data"]["board"]) == (
        "update", "c2", other.pk)
    assert await here.receive_nothing(0.2) and await there.receive_nothing(0.2)
    await here.disconnect()
    await there.disconnect()


async def test_push__announces_bulk_create(layer, board):
    comm = await subscribed(board)

    @database_sync_to_async
    def create_many():
        CardBinding.push(Card.objects.bulk_create([Card(board=board, title="x")]), "create")

    await create_many()
    push = await comm.receive_json_from()
    assert (push["action"], push["data"]["title"]) == ("create", "x")
    await comm.disconnect()


async def test_binding_as_demultiplexer_stream(layer, board):
    class Desk(Demultiplexer):
        consumers = {"cards": CardBinding.consumer, "notes": NoteBinding.consumer}

    comm = WebsocketCommunicator(Desk.as_asgi(), "/ws/desk/")
    comm.scope["user"] = MEMBER
    assert (await comm.connect())[0]
    await comm.send_json_to({"stream": "cards", "payload": {
        "action": "subscribe", "data": {"board": board.pk}}})
    assert (await comm.receive_json_from())["payload"]["response"] == "ok"
    await comm.send_json_to({"stream": "cards", "payload": {
        "action": "create", "data": {"board": board.pk, "title": "muxed"}}})
    frames = [await comm.receive_json_from(), await comm.receive_json_from()]
    assert all(f["stream"] == "cards" for f in frames)
    assert {f["payload"].get("response") or f["payload"]["action"] for f in frames} == {
        "ok", "create"}
    await comm.disconnect()


def test_binding_declaration_errors():
    with pytest.raises(TypeError, match="exactly one of fields or exclude"):
        class Both(Binding):
            model = Note
            fields = ["text"]
            exclude = ["private"]

    with pytest.raises(TypeError, match="has no concrete field"):
        class Typo(Binding):
            model = Note
            fields = ["txet"]


async def test_saves_from_a_plain_thread__each_pushed(layer, board):
    """A thread with no event loop (a WSGI view): every async_to_sync call runs its own loop."""
    comm = await subscribed(board)

    def view():
        from django.db import connection

        try:
            for title in ("one", "two", "three"):
                Card.objects.create(board=board, title=title)
        finally:
            connection.close()  # as a WSGI request's end does (request_finished)

    await asyncio.to_thread(view)
    titles = [(await comm.receive_json_from())["data"]["title"] for _ in range(3)]
    assert titles == ["one", "two", "three"]
    await comm.disconnect()


async def test_track_moves__save_to_other_group_tells_old_group_delete(layer, board):
    other = await database_sync_to_async(Board.objects.create)(name="other")
    card = await database_sync_to_async(Card.objects.create)(board=board, title="mover")
    here, there = await subscribed(board), await subscribed(other)
    card.board = other
    await database_sync_to_async(card.save)()
    gone = await here.receive_json_from()
    assert (gone["action"], gone["pk"], gone["data"]["board"]) == ("delete", card.pk, board.pk)
    came = await there.receive_json_from()
    assert (came["action"], came["pk"], came["data"]["board"]) == ("update", card.pk, other.pk)
    # Staying in its group: an update only.
    card.title = "still there"
    await database_sync_to_async(card.save)()
    assert (await there.receive_json_from())["action"] == "update"
    assert await here.receive_nothing(0.2) and await there.receive_nothing(0.2)
    await here.disconnect()
    await there.disconnect()


async def test_before_save__server_side_rule_applied(layer, board):
    comm = await socket()
    await comm.send_json_to({"action": "create", "data": {"board": board.pk, "title": "t"}})
    pk = (await comm.receive_json_from())["pk"]
    card = await database_sync_to_async(Card.objects.get)(pk=pk)
    assert card.secret == "made by member"
    await comm.disconnect()


async def test_subscriptions_are_bounded(layer, board, monkeypatch):
    monkeypatch.setattr(CardBinding.consumer, "max_subscriptions", 2)
    boards = await database_sync_to_async(
        lambda: [Board.objects.create(name=str(i)).pk for i in range(3)])()
    comm = await socket()
    replies = []
    for pk in boards:
        await comm.send_json_to({"action": "subscribe", "data": {"board": pk}})
        replies.append(await comm.receive_json_from())
    assert [r.get("response") or r["error"] for r in replies] == [
        "ok", "ok", "too many subscriptions"]
    # Re-subscribing to a group it is already in is not a new subscription.
    await comm.send_json_to({"action": "subscribe", "data": {"board": boards[0]}})
    assert (await comm.receive_json_from())["response"] == "ok"
    await comm.disconnect()


async def test_list__current_rows_of_a_filter(layer, board):
    other = await database_sync_to_async(Board.objects.create)(name="other")
    await database_sync_to_async(Card.objects.bulk_create)(
        [Card(board=board, title="a"), Card(board=other, title="b"),
         Card(board=board, title="c", column="done")])
    comm = await socket()
    await comm.send_json_to({"action": "list", "data": {"board": board.pk}})
    reply = await comm.receive_json_from()
    assert reply["response"] == "ok"
    assert [(i["data"]["title"], i["data"]["column"]) for i in reply["items"]] == [
        ("a", "todo"), ("c", "done")]
    assert "secret" not in reply["items"][0]["data"]
    await comm.send_json_to({"action": "list", "data": {"secret": ""}})
    assert (await comm.receive_json_from())["errors"] == {"secret": ["not a bound field"]}
    await comm.send_json_to({"action": "list", "data": {"board": "abc"}})
    assert set((await comm.receive_json_from())["errors"]) == {"board"}
    await comm.disconnect()


async def test_absurdly_nested_json__error_frame(layer):
    comm = await socket()
    await comm.send_to(text_data='{"a":' * 100_000 + "1" + "}" * 100_000)
    assert (await comm.receive_json_from())["error"] == "malformed frame"
    await comm.disconnect()
