"""One app instance: ``application(scope, receive, send)`` for one connection a worker owns.

uvicorn's ``RequestResponseCycle`` is the model: one object per connection owns its inbound
queue, its ``receive`` and ``send``, and the client's answer when the app fails. The host
(host.py) claims connections and starts and counts instances; relayed events reach them through
``AppInstances`` (instances.py), their acknowledgements leave through :class:`~.acks.Acks`: all
of the worker's own code a relayed frame passes (test_frame_path).

``receive`` hands the app the events relayed from the interface; ``send`` checks each message
as Daphne would (conformance.py) and relays it. An app instance is an :class:`.owned.OwnedConn`
(its inbound queue, its state and the named transitions between states) with the app on it.

A WebSocket's consumer channel may be homed on its interface (``layers/homing.py``): its
messages arrive among the client's frames as ``fleet.message`` events, handed to the app decoded
(as ``channel_receive`` would). A session's instance holds a HeldSession (session.py, keeper.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from asgiref.typing import ASGIReceiveEvent, ASGISendEvent

from ..layers.homing import HOMED, HomedChannel
from ..observability.metrics import METRICS
from ..relay import wire
from ..relay.relay import Relay
from . import conformance, dispatch
from .acks import Acks
from .owned import (
    ABANDONED,
    CLOSED,
    DETACHED,
    FAILURE_ANSWER,
    HANDED,
    HANDING_BACK,
    HANDSHAKE,
    NOT_OURS,
    OPEN,
    REQUEST,
    RESPONDING,
    RUNNING,
    OwnedConn,
)
from .session import FORWARDER, UNCOUNTED, HeldSession
from .settings import WorkerSettings

logger = logging.getLogger(__name__)

DISCONNECTS = ("websocket.disconnect", "http.disconnect")


class AppInstance(OwnedConn):
    """A connection this worker owns and the app instance serving it."""

    __slots__ = ("scope", "subprotocol", "taken", "handled", "refused", "application", "relay",
                 "settings", "acks", "on_end", "homed", "session", "on_session_end")

    def __init__(self, conn_id: str, iface: str, scope: dict[str, Any], application: Any, *,
                 relay: Relay, settings: WorkerSettings, acks: Acks | None,
                 on_end: Callable[[AppInstance], None],
                 homed: HomedChannel | None = None, session: HeldSession | None = None,
                 on_session_end: Callable[[AppInstance, int, str], None] | None = None,
                 ) -> None:
        ws = scope["type"] == "websocket"
        super().__init__(conn_id, iface, ws, settings.inbound_limit, settings.app_close_timeout)
        self.scope = scope
        self.subprotocol: str | None = None  # as accepted by the app
        self.taken = 0  # client frames relayed here that the app has taken (ACKs)
        self.handled = 0  # ... and handled (it asked for the next event since)
        self.refused: BaseException | None = None  # why an app's message was refused
        self.application = application
        self.relay = relay
        self.settings = settings
        self.acks = acks  # None: the interface asked for no ACKs
        self.on_end = on_end  # the host's, once the app has returned
        self.homed = homed  # the consumer's channel name, homed on the interface
        self.session = session  # a resumable socket's (None: a plain one)
        # The keeper's (keeper.py), given with ``session``: (instance, close code, reason).
        self.on_session_end = on_session_end
        if ws:
            self.queue.put({"type": "websocket.connect"})

    async def run(self) -> None:
        """Run the app to its end; answer the client if it fails; tell the interface."""
        if self.homed is not None:
            HOMED.set(self.homed)  # this task's context: the app's new_channel() finds it
        try:
            await self.application(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            if not conformance.caused_by(exc, self.refused):  # else logged and answered already
                self._failed(exc)
        finally:
            if self.reaper is not None:
                self.reaper.cancel()
            session = self.session
            if self.state not in NOT_OURS and (session is None or session.socket):
                self.relay.post(self.iface, [wire.END, self.id, None], control=True)
            homed = self.homed
            if homed is not None and homed.moving and homed.groups:
                kept = [homed.layer.prefix, sorted(homed.groups)]
                self.relay.post(self.iface, [wire.KEPT, self.id, kept], control=True)
            if session is not None:
                self.end_session(1000, "app")  # unless it ended already
            self.on_end(self)

    # -- the app's receive and send --------------------------------------------------------

    @dispatch.future_receive
    async def receive(self) -> ASGIReceiveEvent:
        while True:
            future = self.receive_future()
            try:
                event = await future
            except asyncio.CancelledError:
                self.unread(future)
                raise
            message = self.took(event)
            if message is not None:
                return message  # type: ignore[no-any-return]

    # receive() in three steps, for worker/dispatch.py to run without a task per event.

    def receive_future(self) -> asyncio.Future[dict[str, Any]]:
        """The app asks for its next event: a future of the next relayed event, for
        :meth:`took` to turn into what the app receives."""
        # Asking again = every event taken so far has been handled (Channels dispatches one at
        # a time): the point where a hand-back loses nothing, and an ACK's count.
        acks, session = self.acks, self.session
        if acks is not None and self.handled != self.taken:
            self.handled = self.taken
            acks.mark(self)
        if acks is not None and session is not None:  # and what it took of the home's
            session.handled_home(acks, self.iface)
        future = self.queue.next()
        if self.idle is not None and not future.done():
            self.idle.set()
        return future

    def took(self, event: dict[str, Any]) -> Any:
        """The app takes a relayed event: counted for ACKs; what it receives, or None (a
        session's duplicate, dropped, or an unreadable channel message)."""
        acks, session = self.acks, self.session
        kind = event["type"]
        if acks is not None and (kind == "websocket.receive" or kind == wire.CHANNEL_MESSAGE):
            if session is None or UNCOUNTED not in event:
                self.taken += 1
                acks.mark(self)
            elif event[UNCOUNTED] == session.home_claim:
                session.took_home(acks, event.get(FORWARDER), self.iface)
        if kind == "websocket.receive" and session is not None:
            return session.take(event)  # None: a duplicate, counted above, dropped
        if kind != wire.CHANNEL_MESSAGE:
            return event
        return self._channel_message(event)  # a layer message (homing.py), or None

    def unread(self, future: asyncio.Future[dict[str, Any]]) -> None:
        """A receive given up: an event it had and did not take goes back first in line."""
        self.queue.unread(future)

    def _channel_message(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A message sent to the homed channel, as the layer's receive would return it (the
        app dispatches it as one of ``channel_receive``: homing.py); None if unreadable."""
        layer: Any = self.homed.layer if self.homed is not None else None
        try:
            message: dict[str, Any] = layer.decode(event.get("body"))
        except Exception as exc:  # no layer took the name, or a body it cannot read
            logger.warning("%s: a message to its channel could not be decoded (%r); dropped",
                           self.id, exc)
            METRICS.messages_dropped.labels("other").inc()
            return None
        if event.get(wire.REPLAYED):
            message[wire.REPLAYED] = True  # taken by a dead owner's app: perhaps handled
        return message

    def ack_entry(self) -> list[Any]:
        """acks.Counted: the counts of this socket's own frames and messages."""
        return [self.id, self.handled, self.taken]

    async def send(self, message: ASGISendEvent) -> None:
        """The app's ``send()``: check the message for the phase, then relay it.

        Raises what Daphne's would for an invalid message (:mod:`.conformance`), after
        answering the client. After the end (response complete, socket closed, handed back)
        messages are dropped, as Daphne drops them.
        """
        state = self.state  # identity tests: an enum's hash is a Python call, this is per frame
        if state is not RUNNING and state is not HANDING_BACK and state is not DETACHED:
            self._drop(message)
            return
        if self.phase is OPEN and message.__class__ is dict and (
                message.get("type") == "websocket.send"):
            # The per-frame path, checked here (no call): text a str or bytes bytes, not both.
            text, data = message.get("text"), message.get("bytes")
            if ((text is None or text.__class__ is str)
                    and (data is None or data.__class__ is bytes) and not (text and data)):
                if self.session is None:
                    self._post(message)
                else:
                    self._numbered(message)
                return
        try:
            conformance.check(message, ws=self.ws, accepted=self.phase in (OPEN, RESPONDING))
            self._relay(message)  # type: ignore[arg-type]  # check() passed: a dict
        except conformance.INVALID as exc:
            self._refuse(exc)
            raise

    def _relay(self, message: dict[str, Any]) -> None:
        """Relay one message (of the app, checked, or the worker's own) to the interface."""
        state = self.state
        if state is HANDED or state is ABANDONED:
            self._drop(message)
            return
        kind = message.get("type")
        session = self.session
        if kind == "websocket.accept":
            self.phase = OPEN
            self.subprotocol = message.get("subprotocol")
        elif kind == "websocket.close":
            self.close()
            # The app sees its disconnect now rather than after the client's close frame.
            self.disconnect(message.get("code") or 1000)
            if session is not None:
                if session.socket:
                    self._post(message)
                self.end_session(message.get("code") or 1000, "app")
                return
        elif kind == "websocket.send" and session is not None:
            self._numbered(message)
            return
        elif kind == "http.response.start":
            self.phase = RESPONDING
        elif kind == "http.response.body":
            done = not message.get("more_body", False)
            if done:
                self.close()
            for part in wire.split_body(message, self.settings.chunk_size):
                self._post(part)
            if done:
                self.disconnect(1000)
            return
        if session is None or session.socket:
            self._post(message)

    def _numbered(self, message: dict[str, Any]) -> None:
        """A session's ``websocket.send``: numbered, relayed if a socket serves it."""
        session: Any = self.session
        numbered = session.number(message)
        if numbered is not None:
            self._post(numbered)
        elif session.overflowed:
            self.end_session(1006, "overflow")

    def _post(self, message: dict[str, Any]) -> None:
        if not self.relay.post(self.iface, [wire.SEND, self.id, message]):
            # Redis is slower than what the apps send: end this connection, buffer nothing.
            logger.warning("%s: relay backlog full; closing", self.id)
            METRICS.messages_dropped.labels("buffer_full").inc()
            self.release(1013, always=True)

    def _drop(self, message: Any) -> None:
        if self.state is HANDED and message.get("type") == "websocket.send":
            # The old consumer of a re-homed socket (e.g. a group message in the gap).
            METRICS.messages_dropped.labels("rehome_gap").inc()

    # -- failures --------------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        """The app raised: answer the client as Daphne would, in one log line."""
        status = 500
        if conformance.unrouted(exc):
            # Channels' URLRouter refusing an unknown path: a client error, one line.
            status = 404
            logger.warning("no route for %s %s on %s", self.scope["type"], self.scope.get("path"),
                           self.id)
        else:
            logger.error("application failed on %s %s: %r", self.id, self.scope.get("path"), exc,
                         exc_info=exc)
        self._answer_failure(status)

    def _refuse(self, exc: Exception) -> None:
        """The app sent what Daphne would refuse: its ``send()`` raises ``exc``, nothing of it
        is relayed, the client gets 500 / 1011 (no detail), the app its disconnect, and one
        line names the consumer and the problem."""
        if self.state not in (RUNNING, HANDING_BACK, DETACHED):
            return  # ended already: dropped, as everything after the end
        self.refused = exc
        logger.error("%s sent an invalid message on %s %s: %s: %s (the client gets %s)",
                     conformance.sender(self.task, self.application), self.id,
                     self.scope.get("path"), type(exc).__name__, exc, FAILURE_ANSWER[self.phase])
        if self.phase is RESPONDING:
            self.release(1011, always=True)  # the status is out: the response is cut
            return
        self._answer_failure(500)
        self.close()
        self.disconnect(1011)

    def _answer_failure(self, status: int) -> None:
        """Answer the client of a failed app as Daphne does: refuse the handshake with
        ``status``, close with 1011, or answer ``status``."""
        phase = self.phase
        if phase is HANDSHAKE:
            # Refused with an HTTP status (Daphne answers any crash before accept with 500;
            # an unknown path is 404 here). An interface that predates this ignores the
            # message and closes with 1011 on END.
            self._relay({"type": "websocket.http.response.start", "status": status,
                         "headers": []})
        elif phase is OPEN and self.state is not CLOSED:
            self._relay({"type": "websocket.close", "code": 1011})
        elif phase is REQUEST:
            body = b"Not Found\n" if status == 404 else b"Server Error\n"
            self._relay({"type": "http.response.start", "status": status,
                         "headers": [(b"content-type", b"text/plain")]})
            self._relay({"type": "http.response.body", "body": body})

    # -- ending ----------------------------------------------------------------------------

    def move_away(self, code: int) -> None:
        """Its socket moves to another worker (handed back, or this worker declared dead): the
        app's disconnect (``code``) says so, and its homed channel stays in its groups."""
        if self.homed is not None:
            self.homed.moving = True
        if self.ws:
            self.hand_disconnect({"type": "websocket.disconnect", "code": code,
                                  wire.REHOMING: True})

    def release(self, code: int, *, always: bool = False) -> None:
        """Give the connection up: the interface closes the socket with ``code``.

        ``always``: tell the interface even if the app had closed it (its close may be what
        could not be relayed).
        """
        if self.state is not CLOSED or always:
            self.close()
            self.relay.post(self.iface, [wire.RELEASE, self.id, code], control=True)
        self.disconnect(code)

    def end_session(self, code: int, reason: str) -> None:
        """End its session, once (``reason``: metrics.SESSION_END_REASONS): closed here, the app's
        disconnect ``code``, the home and the registry told (keeper.py)."""
        session = self.session
        if session is not None and session.ended is None and self.on_session_end is not None:
            self.on_session_end(self, code, reason)

    # -- events from the interface ---------------------------------------------------------

    def deliver(self, event: dict[str, Any]) -> None:
        """A relayed event: to the app, or stashed while handing back."""
        state = self.state
        if state is HANDED or state is ABANDONED:
            return  # finished here already; the interface learns from END
        if event["type"] in DISCONNECTS:
            self.hand_disconnect(event)
            self.end_session(event.get("code", 1005), "client")
            return
        if self.gone:
            return
        if state is HANDING_BACK:
            self.keep(event)
            return
        try:
            self.queue.put(event)
        except asyncio.QueueFull:
            logger.warning("%s: app is %d events behind; closing", self.id, self.queue.qsize())
            METRICS.messages_dropped.labels("buffer_full").inc()
            self.release(1013)
