"""The relay's names and message formats: the work queue, key names, envelopes, items, batches.

Every name both sides (and the metrics) use is defined here once: the work queue
``fleet.connect``, the prefixes of the process channels, the Redis key names built from
``CHANNELS_FLEET_KEY_PREFIX``.

Everything here is plain data that msgpack carries (bytes, str, int, float, list, dict), so
any channel layer serialiser works. Two kinds of relay message exist:

- the **connect envelope**, sent by an interface to the shared work queue ``CONNECT_QUEUE``::

      {"type": "fleet.connect", "iface": "<interface channel>", "conn": "<claim id>",
       "scope": {...serialisable scope...}, "sent_at": 1700000000.0, "deadline": 1700000005.0}

- a **batch**, sent between the two process-local channels of an interface and a worker::

      {"type": "fleet.batch", "from": "<sender channel>", "items": [[KIND, conn, payload], ...]}

  Items of one batch are applied in order; batches between two processes are sent in order.

An envelope's ``conn`` and every item's ``conn`` name one **claim** of a connection:
``<connection id>~<claim number>`` (:func:`claim_id`), numbered by the interface from 1 for
each envelope it sends (a new connection, a re-home, a second try). A worker takes it as an
opaque id and echoes it in everything it relays about that app instance, so an interface acts
only on items of a connection's current claim: what an earlier claim's app still sends (even
from the same worker, claiming the socket again) is ignored. Workers never look inside it, so
interfaces and workers of either side of this change work together.

A re-home envelope is a connect envelope with ``"rehomed": n`` (n >= 1): the connection's
socket is already open and the new owner runs the app from ``websocket.connect`` again. An
envelope with ``"ack": true`` asks the owner to acknowledge the client frames its app has
handled (ACK items, below): the interface keeps the others to replay them if the owner dies.

A WebSocket's envelope may carry ``"channel"``: the consumer's channel name, homed on the
interface (layers/homing.py), the same in every envelope of the connection. The owner whose
app takes it says so with an INBOX item naming the layer's key prefix; the interface then
pops that channel's messages and relays each as a ``fleet.message`` event (``{"type":
"fleet.message", "body": <the layer's serialised message>}``) among the client's frames: held,
returned, acknowledged and replayed as they are.

A resumable socket's envelope carries ``"session"``; the items that move a session between
sockets (DETACH, RESUME, ...) are in session_items.py, checked by :func:`parse_item` too.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NotRequired, TypedDict, cast

from ..exceptions import WireError
from ..layers.keys import channel_key
from . import session_items

#: The shared work queue: interfaces send connect envelopes there, workers take them. It is
#: also the envelopes' ``type``.
CONNECT_QUEUE = "fleet.connect"
BATCH = "fleet.batch"
#: Name prefixes of the process-local relay channels (``layer.new_channel(prefix)``).
INTERFACE_CHANNELS = "fleet.iface"
WORKER_CHANNELS = "fleet.worker"
#: Between a connection id and its claim number (connection ids are ``<hex>.<hex>``).
CLAIM_SEPARATOR = "~"


def queue_key(prefix: str, queue: str = CONNECT_QUEUE) -> str:
    """The Redis LIST of a work queue, as the layer names it: ``fleet:q:{fleet.connect}``."""
    return channel_key(prefix, queue)


def heartbeat_key(channel: str, prefix: str) -> str:
    """A process's heartbeat; every one shares the hash tag ``{hb}`` (one MGET checks all)."""
    return f"{prefix}:hb:{{hb}}:{channel}"


def workers_key(prefix: str) -> str:
    """A sorted set of the live workers' channels, each scored with the unix time (ms) its
    heartbeat expires: how an interface reads every worker's status without listing keys."""
    return f"{prefix}:workers:{{hb}}"


def tombstone_key(channel: str, prefix: str) -> str:
    """Left by the peer that declared ``channel``'s process dead (peer_watch.py, tombstones.py)."""
    return f"{prefix}:dead:{{hb}}:{channel}"

#: One relay item, ``[kind, conn, payload]``: a list, as msgpack carries it (the kinds below).
Item = list[Any]


class ConnectEnvelope(TypedDict):
    """What an interface sends to the work queue for one connection (the module's docstring)."""

    type: str  # CONNECT_QUEUE
    iface: str  # the interface's channel: where the owner relays to
    conn: str  # the claim id
    scope: dict[str, Any]  # scope_to_wire()
    sent_at: float
    deadline: float  # unix time after which the interface has answered 1013 / 503 itself
    rehomed: NotRequired[int]  # n >= 1: the socket is open already, its n-th new owner
    ack: NotRequired[bool]  # acknowledge the client frames the app handled
    channel: NotRequired[str]  # the consumer's channel name, homed on the interface
    session: NotRequired[session_items.SessionMark]  # a resumable socket's (session_items.py)


#: Items of one sender to one receiver, applied in order (``from``: the sender's channel).
Batch = TypedDict("Batch", {"type": str, "items": list[Item], "from": NotRequired[str]})

#: The event that carries a message sent to a consumer's homed channel (module docstring).
CHANNEL_MESSAGE = "fleet.message"
#: Set in the disconnect event of an app instance whose socket moves to another worker.
REHOMING = "fleet_rehoming"
#: Set in an event replayed to a new owner: a dead owner's app may have handled it already.
REPLAYED = "fleet_replayed"

# Item kinds. interface -> worker:
EVENT = "ev"  # payload: an ASGI event for the app (websocket.receive, ..., fleet.message)
# Not about one connection (its conn is ""): payload [body, [claim, ...]], one message of a
# homed channel for each of these connections (a group message's members on one worker), as
# a fleet.message event each.
MESSAGE = "msg"
GONE = "gone"  # payload: a close code; the client is gone, deliver the matching disconnect
# worker -> interface:
CLAIM = "claim"  # payload: the worker's channel; the worker owns the connection from now on
SEND = "send"  # payload: an ASGI message from the app (websocket.accept, http.response.body, ...)
END = "end"  # payload: None; the app instance for this connection has finished
RELEASE = "release"  # payload: a close code; the worker gives the connection up (drain)
# payload: a cause. "drain": the worker hands the connection back to be re-homed (FENCE, RETURN);
# "dead": the worker was declared dead and dropped it: the interface acts as for a dead owner.
REHOME = "rehome"
RETURN = "return"  # payload: list of events the worker took for it and did not deliver (fence)
INBOX = "inbox"  # payload: a layer's key prefix; the app took the homed channel on that layer
# payload [key prefix, [group, ...]]: the groups a moving socket's old app instance had put its
# homed channel in (kept for the next one); the interface leaves them when the socket ends.
KEPT = "kept"
# Appended to a batch, not about one connection (its conn is ""): payload [[conn, handled,
# taken], ...], counts of the client frames (websocket.receive) relayed to this owner that the
# app has handled (and whose output is ahead of this item) and that it has taken.
ACK = "ack"
# interface -> worker, answering REHOME:
FENCE = "fence"  # payload: None; nothing more comes for this connection: RETURN what you hold
# A process to itself, through its own channel: payload a number; every item that was waiting
# for it when it sent this one has been handled.
CAUGHT_UP = "caught-up"

SCOPE_KEYS = (
    "type",
    "path",
    "raw_path",
    "query_string",
    "headers",
    "client",
    "server",
    "scheme",
    "subprotocols",
    "http_version",
    "root_path",
    "method",
)

DEFAULT_CHUNK = 256 * 1024


def scope_to_wire(scope: dict[str, Any]) -> dict[str, Any]:
    """Keep the serialisable part of an ASGI connection scope."""
    out: dict[str, Any] = {}
    for key in SCOPE_KEYS:
        if key not in scope:
            continue
        value = scope[key]
        if key == "headers":
            value = [[bytes(k), bytes(v)] for k, v in value]
        elif key in ("client", "server", "subprotocols") and value is not None:
            value = list(value)
        out[key] = value
    return out


def scope_from_wire(envelope: ConnectEnvelope) -> dict[str, Any]:
    """Rebuild an ASGI scope from a connect envelope (headers as tuples; client and server as
    ``[host, port]`` lists, as Daphne gives them)."""
    wire = envelope["scope"]
    scope: dict[str, Any] = dict(wire)
    scope["headers"] = [(bytes(k), bytes(v)) for k, v in wire.get("headers", [])]
    for key in ("client", "server"):
        if scope.get(key) is not None:
            scope[key] = list(scope[key])
    if "subprotocols" in scope:
        scope["subprotocols"] = list(scope["subprotocols"] or [])
    scope.setdefault("root_path", "")
    scope.setdefault("query_string", b"")
    scope.setdefault("raw_path", None)
    scope["asgi"] = {"version": "3.0", "spec_version": "2.3"}
    return scope


def connect_envelope(
    iface: str, conn: str, scope: dict[str, Any], claim_timeout: float, rehomed: int = 0,
    ack: bool = False, channel: str | None = None,
    session: session_items.SessionMark | None = None,
) -> ConnectEnvelope:
    """The message an interface sends to the work queue for one new (or re-homed) connection;
    ``ack``: the owner is to acknowledge the client frames its app handled; ``channel``: the
    consumer's homed channel name; ``session``: a resumable socket's session."""
    now = time.time()
    envelope: ConnectEnvelope = {
        "type": CONNECT_QUEUE,
        "iface": iface,
        "conn": conn,
        "scope": scope_to_wire(scope),
        "sent_at": now,
        "deadline": now + claim_timeout,
    }
    if rehomed:
        envelope["rehomed"] = rehomed
    if ack:
        envelope["ack"] = True
    if channel:
        envelope["channel"] = channel
    if session is not None:
        envelope["session"] = session
    return envelope


def claim_id(conn: str, number: int) -> str:
    """The id claim ``number`` of connection ``conn`` goes by on the wire: ``i1.7~2``."""
    return f"{conn}{CLAIM_SEPARATOR}{number}"


def claimed_conn(claim: str) -> str:
    """The connection id in a claim id (what :func:`claim_id` was given)."""
    return claim.rpartition(CLAIM_SEPARATOR)[0]


def batch(items: list[Item], sender: str = "") -> Batch:
    message: Batch = {"type": BATCH, "items": items}
    if sender:
        message["from"] = sender
    return message


def item_size(item: Item) -> int:
    """A cheap size estimate of one relay item, to keep batches well under the layer's limits."""
    payload = item[2]
    if isinstance(payload, dict):
        body = payload.get("body") or payload.get("bytes") or payload.get("text") or b""
        return 64 + len(body)
    return 64


def split_body(message: dict[str, Any], limit: int = DEFAULT_CHUNK) -> Iterator[dict[str, Any]]:
    """Split an ``http.request`` / ``http.response.body`` message so no chunk exceeds ``limit``."""
    body = message.get("body", b"")
    if len(body) <= limit:
        yield message
        return
    more = message.get("more_body", False)
    for start in range(0, len(body), limit):
        part = dict(message)
        part["body"] = body[start : start + limit]
        part["more_body"] = more or start + limit < len(body)
        yield part


# -- checking what comes off Redis ---------------------------------------------------------
# Anything with access to the relay's Redis can put a message on fleet.connect or a process
# channel. A malformed one must cost one log line, never a receive loop.


_ITEM_PAYLOADS: dict[str, tuple[type, ...]] = {
    EVENT: (dict,), GONE: (int,), CLAIM: (str,), SEND: (dict,), END: (type(None),),
    RELEASE: (int,), REHOME: (str,), RETURN: (list,), FENCE: (type(None),), ACK: (list,),
    CAUGHT_UP: (int,), INBOX: (str,), MESSAGE: (list,), KEPT: (list,),
    **session_items.ITEM_PAYLOADS,
}


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise WireError(what)


def _is_pair(value: Any) -> bool:
    return (
        isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str)
        and isinstance(value[1], int) and not isinstance(value[1], bool)
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_envelope(message: Any) -> ConnectEnvelope:
    """Check a connect envelope (as the layer decoded it); return it or raise WireError."""
    _need(isinstance(message, dict), f"connect envelope is a {type(message).__name__}, not a dict")
    _need(message.get("type") == CONNECT_QUEUE,
          f"not a {CONNECT_QUEUE} message: {message.get('type')!r:.40}")
    for key in ("iface", "conn"):
        _need(isinstance(message.get(key), str) and bool(message[key]), f"bad {key!r}")
    for key in ("sent_at", "deadline"):
        _need(key not in message or _is_number(message[key]), f"bad {key!r}")
    rehomed = message.get("rehomed", 0)
    _need(isinstance(rehomed, int) and not isinstance(rehomed, bool) and rehomed >= 0,
          "bad 'rehomed'")
    _need(isinstance(message.get("ack", False), bool), "bad 'ack'")
    _need(isinstance(message.get("channel", ""), str), "bad 'channel'")
    if "session" in message:
        session_items.parse_session(message["session"])
    scope = message.get("scope")
    _need(isinstance(scope, dict), "scope is not a dict")
    _need(scope.get("type") in ("websocket", "http"), "scope type is not websocket or http")
    _need(isinstance(scope.get("path"), str), "scope path is not a string")
    headers = scope.get("headers", [])
    _need(isinstance(headers, list), "scope headers are not a list")
    for header in headers:
        _need(isinstance(header, (list, tuple)) and len(header) == 2
              and all(isinstance(part, bytes) for part in header), "bad header")
    for key in ("client", "server"):
        _need(scope.get(key) is None or _is_pair(scope[key]), f"bad scope {key!r}")
    for key in ("query_string", "raw_path"):
        _need(scope.get(key) is None or isinstance(scope[key], bytes), f"bad scope {key!r}")
    for key in ("scheme", "http_version", "root_path", "method"):
        _need(scope.get(key) is None or isinstance(scope[key], str), f"bad scope {key!r}")
    subprotocols = scope.get("subprotocols")
    _need(subprotocols is None or (isinstance(subprotocols, list)
                                   and all(isinstance(p, str) for p in subprotocols)),
          "bad scope 'subprotocols'")
    return cast(ConnectEnvelope, message)


def parse_item(item: Any) -> Item:
    """Check one relay item ``[kind, conn, payload]``; return it or raise WireError.

    Called for every relayed frame, so the messages are only formatted on failure.
    """
    if not (isinstance(item, list) and len(item) == 3):
        raise WireError("relay item is not [kind, conn, payload]")
    kind, conn, payload = item
    if not (isinstance(kind, str) and kind in _ITEM_PAYLOADS):
        raise WireError(f"unknown item kind {kind!r:.40}")
    if not isinstance(conn, str):
        raise WireError("item connection id is not a string")
    if not isinstance(payload, _ITEM_PAYLOADS[kind]) or isinstance(payload, bool):
        raise WireError(f"bad payload for a {kind} item")
    if isinstance(payload, dict) and not isinstance(payload.get("type"), str):
        raise WireError(f"{kind} item payload has no type")
    return item


def parse_acks(payload: list[Any]) -> list[Any]:
    """Check an ACK item's payload ``[[conn, handled, taken], ...]``; return it or WireError.
    An entry may name a fourth, the forwarder its counts are for (worker/session.HomeCounts):
    the interface it reaches passes it on."""
    for entry in payload:  # one entry per socket per batch: kept cheap
        if not (type(entry) is list and (len(entry) == 3 or (
                    len(entry) == 4 and type(entry[3]) is str))
                and type(entry[0]) is str and type(entry[1]) is int and type(entry[2]) is int
                and entry[1] >= 0 and entry[2] >= 0):
            raise WireError("bad entry in an ack item")
    return payload


def parse_message(payload: list[Any]) -> tuple[bytes, list[str]]:
    """Check a MESSAGE item's payload ``[body, [claim, ...]]``; return it or WireError."""
    if not (len(payload) == 2 and type(payload[0]) is bytes and type(payload[1]) is list
            and all(type(claim) is str for claim in payload[1])):
        raise WireError("bad payload for a msg item")
    return payload[0], payload[1]


def parse_kept(payload: list[Any]) -> tuple[str, list[str]]:
    """Check a KEPT item's payload ``[key prefix, [group, ...]]``; return it or WireError."""
    if not (len(payload) == 2 and type(payload[0]) is str and type(payload[1]) is list
            and all(type(group) is str for group in payload[1])):
        raise WireError("bad payload for a kept item")
    return payload[0], payload[1]


def parse_batch(message: Any) -> list[Any]:
    """The items of a relay batch (each still to be checked with parse_item), or WireError."""
    _need(isinstance(message, dict) and message.get("type") == BATCH, "not a relay batch")
    items = message.get("items")
    _need(isinstance(items, list), "batch items are not a list")
    _need(isinstance(message.get("from", ""), str), "batch sender is not a string")
    return items
