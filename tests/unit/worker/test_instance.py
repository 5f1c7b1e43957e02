"""An app instance on its own: its phase, and what the client gets when the app fails in each."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from channels_fleet.relay import wire
from channels_fleet.worker.instance import AppInstance
from channels_fleet.worker.owned import CLOSED, HANDSHAKE, OPEN, RESPONDING
from channels_fleet.worker.settings import WorkerSettings

pytestmark = pytest.mark.timeout(10)


class Relay:
    """What the instance posts to its interface, in order."""

    def __init__(self) -> None:
        self.items: list[list[Any]] = []

    def post(self, dest: str, item: list[Any], *, control: bool = False) -> bool:
        self.items.append(item)
        return True

    def sent(self) -> list[dict[str, Any]]:
        return [item[2] for item in self.items if item[0] == wire.SEND]


def instance(kind: str, app: Any) -> tuple[AppInstance, Relay]:
    relay = Relay()
    settings = WorkerSettings(redis_url=("redis://nowhere:1",), app="x:app")
    scope = {"type": kind, "path": "/p/"}
    made = AppInstance("i.1", "fleet.iface.x!y", scope, app, relay=relay,  # type: ignore[arg-type]
                       settings=settings, acks=None, on_end=lambda _: None)
    return made, relay


async def failing_after(messages: list[dict[str, Any]], kind: str) -> tuple[AppInstance, Relay]:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for message in messages:
            await send(message)
        raise RuntimeError("boom")

    made, relay = instance(kind, app)
    made.task = asyncio.current_task()
    await made.run()
    return made, relay


async def test_a_websocket_failing_in_its_handshake_is_refused_500() -> None:
    made, relay = await failing_after([], "websocket")
    assert made.phase is HANDSHAKE
    assert relay.sent() == [{"type": "websocket.http.response.start", "status": 500,
                             "headers": []}]


async def test_an_accepted_websocket_failing_is_closed_1011() -> None:
    made, relay = await failing_after([{"type": "websocket.accept"}], "websocket")
    assert made.phase is OPEN and made.state is CLOSED
    assert relay.sent()[-1] == {"type": "websocket.close", "code": 1011}


async def test_a_request_failing_before_its_response_is_answered_500() -> None:
    made, relay = await failing_after([], "http")
    assert made.phase is RESPONDING  # by the worker's own answer
    assert [m["type"] for m in relay.sent()] == ["http.response.start", "http.response.body"]
    assert relay.sent()[0]["status"] == 500


async def test_a_response_failing_after_its_start_is_cut() -> None:
    start = {"type": "http.response.start", "status": 200, "headers": []}
    made, relay = await failing_after([start, {"type": "http.response.body", "body": b"a",
                                               "more_body": True}], "http")
    assert made.phase is RESPONDING
    assert relay.sent() == [start, {"type": "http.response.body", "body": b"a",
                                    "more_body": True}]  # nothing more: the client sees it cut


async def test_an_invalid_message_is_refused_and_raises_in_the_app() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "websocket.send", "text": "too early"})

    made, relay = instance("websocket", app)
    assert made.phase is HANDSHAKE
    made.task = asyncio.current_task()
    await made.run()  # the ValueError is logged once, as the refusal
    assert isinstance(made.refused, ValueError)
    assert relay.sent() == [{"type": "websocket.http.response.start", "status": 500,
                             "headers": []}]
    assert made.state is CLOSED and made.gone
