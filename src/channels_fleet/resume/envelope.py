"""The resume protocol's wire format (``channels-fleet.resume.v1``): headers, hello, offers.

docs/resume-protocol.md is the specification; this module is its codec, shared by the
interface and the Python client, with no I/O. Every WebSocket message of a resumable session
starts with an ASCII header ended by ``\\n``; an app frame's payload follows it, in a message
of the app frame's own type (text or binary)::

    D <seq> <ack>\\n<payload>   an app frame, both ways
    A <ack>\\n                  an acknowledgement, both ways
    H\\n<json>                  the hello, server -> client, first message of each connection
    B\\n                        come back now (the interface drains), server -> client
    X\\n                        the session is over; the close that follows is final

The handshake offers ``channels-fleet.resume.v1``, then, to resume,
``channels-fleet.session.<token>.<last>``, then the app's own subprotocols (:func:`offer`,
:func:`parse_offer`).
"""

from __future__ import annotations

import json
import random
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ..exceptions import ResumeProtocolError as ProtocolError

__all__ = [
    "ProtocolError", "Data", "Ack", "Hello", "Back", "End", "Message", "Offer", "Payload",
    "parse", "encode_data", "encode_ack", "encode_hello", "offer", "parse_offer", "new_token",
    "payload_size", "reconnect_delay", "client_close_ends_session",
]

#: The subprotocol a client offers first, and a resuming server selects.
SUBPROTOCOL = "channels-fleet.resume.v1"
#: Prefix of the offer that names the session to resume: ``channels-fleet.session.<token>.<last>``.
SESSION_PREFIX = "channels-fleet.session."
#: Every subprotocol starting with this is the protocol's, never the app's: the server strips
#: them all before the app sees the offer (a v2 client's offers too).
RESERVED_PREFIX = "channels-fleet."
VERSION = 1

#: A receiver acknowledges once this many frames are unacknowledged ...
ACK_EVERY = 16
#: ... or once the oldest unacknowledged one is this many seconds old.
ACK_AFTER_S = 1.0

#: Sequence numbers and acks stay exact in a JavaScript number.
MAX_SEQ = 2**53 - 1
#: A header longer than this (the longest valid one is 36 bytes) is a protocol error.
MAX_HEADER = 64
#: Session tokens: base64url without padding, this long (the server's carry >= 128 bits).
TOKEN_MIN, TOKEN_MAX = 16, 128

#: The client's default bounds on what it keeps unacknowledged (frames, payload bytes).
CLIENT_MAX_FRAMES = 1000
CLIENT_MAX_BYTES = 1024 * 1024
#: Reconnect back-off: full jitter, ``uniform(0, min(cap, base * 2 ** (failures - 1)))``.
RECONNECT_BASE = 0.25
RECONNECT_CAP = 10.0
#: Seconds a client waits for the hello after the handshake before it drops the connection.
HELLO_TIMEOUT = 10.0

# Close codes the protocol gives a meaning to (all others are the app's or the transport's).
CLOSE_NORMAL = 1000  # from the client: the session ends
CLOSE_PROTOCOL_ERROR = 1002  # from the server: the session ends (a protocol error)
CLOSE_SUPERSEDED = 4001  # from the server, no X: another connection resumed the session
CLOSE_CLIENT_PROTOCOL_ERROR = 4002  # from a client (browsers may not send 1002)
CLOSE_RESUME_LOST = 4010  # from a client: it cannot replay what the server needs; ends it

Payload = str | bytes

_NUMBER = re.compile(r"0|[1-9][0-9]{0,15}", re.ASCII)
_TOKEN = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)


@dataclass(frozen=True, slots=True)
class Data:
    """``D <seq> <ack>``: the app's frame number ``seq`` of this direction; ``ack`` acknowledges
    the other direction's frames up to it."""

    seq: int
    ack: int
    payload: Payload


@dataclass(frozen=True, slots=True)
class Ack:
    """``A <ack>``: the sender has every frame of the other direction up to ``ack``."""

    ack: int


@dataclass(frozen=True, slots=True)
class Hello:
    """``H``: the server's first message on each connection of a resumable session."""

    session: str
    resumed: bool
    ack: int  # the highest client frame the server holds (0 on a new session)
    protocol: str | None  # the app's subprotocol, or None


@dataclass(frozen=True, slots=True)
class Back:
    """``B``: the interface drains; reconnect at once (no back-off) and resume."""


@dataclass(frozen=True, slots=True)
class End:
    """``X``: the session is over; the close that follows is final."""


Message = Data | Ack | Hello | Back | End

BACK = "B\n"
END = "X\n"


def _number(text: str, what: str) -> int:
    if not _NUMBER.fullmatch(text) or int(text) > MAX_SEQ:
        raise ProtocolError(f"bad {what} {text[:20]!r}: a decimal 0..2**53-1, no leading zeros")
    return int(text)


def valid_token(token: object) -> bool:
    """Whether ``token`` has the shape of a session token (not whether it names a session)."""
    return (isinstance(token, str) and TOKEN_MIN <= len(token) <= TOKEN_MAX
            and _TOKEN.fullmatch(token) is not None)


def parse(message: Payload, *, from_server: bool) -> Message:
    """Decode one WebSocket message of a resumable session, or raise ProtocolError.

    A client passes ``from_server=True``: only a server sends H, B and X.

        >>> parse("D 3 1\\nhello", from_server=False)
        Data(seq=3, ack=1, payload='hello')
    """
    if isinstance(message, str):
        end = message.find("\n", 0, MAX_HEADER)
        if end < 0:
            raise ProtocolError("no header: no '\\n' in the first 64 characters")
        header = message[:end]
        if not header.isascii():
            raise ProtocolError("header is not ASCII")
    else:
        end = message.find(b"\n", 0, MAX_HEADER)
        if end < 0:
            raise ProtocolError("no header: no '\\n' in the first 64 bytes")
        try:
            header = message[:end].decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("header is not ASCII") from None
    rest = message[end + 1 :]
    parts = header.split(" ")
    kind = parts[0]
    if kind == "D" and len(parts) == 3:
        seq = _number(parts[1], "seq")
        if seq == 0:
            raise ProtocolError("frame seq 0: app frames count from 1")
        return Data(seq, _number(parts[2], "ack"), rest)
    if kind == "A" and len(parts) == 2 and not rest:
        return Ack(_number(parts[1], "ack"))
    if kind in ("H", "B", "X") and not from_server:
        raise ProtocolError(f"a client sent {kind!r}, which only a server sends")
    if kind == "H" and len(parts) == 1:
        return _parse_hello(rest)
    if kind == "B" and len(parts) == 1 and not rest:
        return Back()
    if kind == "X" and len(parts) == 1 and not rest:
        return End()
    if kind in ("D", "A", "H", "B", "X"):
        raise ProtocolError(f"malformed {kind!r} message: header {header[:40]!r}"
                            + (" with a payload" if rest and kind in "ABX" else ""))
    raise ProtocolError(f"unknown message kind {kind[:20]!r}")


def _parse_hello(body: Payload) -> Hello:
    try:
        hello = json.loads(body)
    except ValueError:
        raise ProtocolError("hello is not JSON") from None
    if not isinstance(hello, dict):
        raise ProtocolError("hello is not a JSON object")
    if hello.get("v") != VERSION or type(hello.get("v")) is not int:
        raise ProtocolError(f"hello version {hello.get('v')!r}, expected {VERSION}")
    if not valid_token(hello.get("session")):
        raise ProtocolError("hello session is not a token (16-128 of [A-Za-z0-9_-])")
    if type(hello.get("resumed")) is not bool:
        raise ProtocolError("hello 'resumed' is not a boolean")
    ack = hello.get("ack")
    if type(ack) is not int or not 0 <= ack <= MAX_SEQ:
        raise ProtocolError("hello 'ack' is not an integer 0..2**53-1")
    if not hello["resumed"] and ack != 0:
        raise ProtocolError("hello of a new session acknowledges frames")
    protocol = hello.get("protocol")
    if protocol is not None and not isinstance(protocol, str):
        raise ProtocolError("hello 'protocol' is neither a string nor null")
    return Hello(hello["session"], hello["resumed"], ack, protocol)


def encode_data(seq: int, ack: int, payload: Payload) -> Payload:
    """``D <seq> <ack>\\n`` and the payload, in a message of the payload's type."""
    if isinstance(payload, str):
        return f"D {seq} {ack}\n{payload}"
    return b"D %d %d\n" % (seq, ack) + payload


def encode_ack(ack: int) -> str:
    return f"A {ack}\n"


def encode_hello(hello: Hello) -> str:
    body = {"v": VERSION, "session": hello.session, "resumed": hello.resumed, "ack": hello.ack,
            "protocol": hello.protocol}
    return "H\n" + json.dumps(body, separators=(",", ":"))


def payload_size(payload: Payload) -> int:
    """A payload's bytes on the wire (UTF-8 for text): what the byte bounds count."""
    return len(payload.encode()) if isinstance(payload, str) else len(payload)


# -- the handshake --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Offer:
    """What a client offered in ``Sec-WebSocket-Protocol``, as the server reads it."""

    resume: bool  # SUBPROTOCOL was offered
    session: str | None  # the session to resume (None: a new one)
    last: int  # the highest server frame the client has, in order
    app: tuple[str, ...]  # the app's own subprotocols, in the client's order


def offer(app: Sequence[str] = (), session: str | None = None, last: int = 0) -> list[str]:
    """The subprotocols a client offers: SUBPROTOCOL, the session to resume, the app's.

        >>> offer(["chat.v2"], "q8Zk3vJ0bW1yR2tLx9aP", 7)
        ['channels-fleet.resume.v1', 'channels-fleet.session.q8Zk3vJ0bW1yR2tLx9aP.7', 'chat.v2']
    """
    for protocol in app:
        if protocol.startswith(RESERVED_PREFIX):
            raise ValueError(f"subprotocol {protocol!r}: {RESERVED_PREFIX}* names are reserved")
    offered = [SUBPROTOCOL]
    if session is not None:
        if not valid_token(session) or not 0 <= last <= MAX_SEQ:
            raise ValueError(f"cannot offer session {session!r} with last={last}")
        offered.append(f"{SESSION_PREFIX}{session}.{last}")
    return [*offered, *app]


def parse_offer(offered: Sequence[str]) -> Offer:
    """Read a client's offer. A session entry that is malformed, or not alone, or offered
    without SUBPROTOCOL, is ignored: the client gets a new session, never an error."""
    resume = SUBPROTOCOL in offered
    sessions = [p for p in offered if p.startswith(SESSION_PREFIX)]
    app = tuple(p for p in offered if not p.startswith(RESERVED_PREFIX))
    session, last = None, 0
    if resume and len(sessions) == 1:
        token, _, number = sessions[0][len(SESSION_PREFIX) :].rpartition(".")
        if valid_token(token) and _NUMBER.fullmatch(number) and int(number) <= MAX_SEQ:
            session, last = token, int(number)
    return Offer(resume, session, last, app)


def new_token() -> str:
    """A fresh session token: 144 random bits, base64url (24 characters)."""
    return secrets.token_urlsafe(18)


def reconnect_delay(failures: int, base: float = RECONNECT_BASE,
                    cap: float = RECONNECT_CAP) -> float:
    """Seconds before reconnect attempt number ``failures`` (1 for the first): full jitter, so
    the clients of a dead interface come back spread over the whole window."""
    return random.uniform(0, min(cap, base * 2 ** min(max(failures - 1, 0), 64)))


def client_close_ends_session(code: int | None) -> bool:
    """Whether a close the server receives from a client ends its session: codes 1000, 1001
    (a page unloading) and 3000-4999 (the app's, and 4002/4010) do; no close frame (None),
    and the codes a client's library sends on its own (1002, 1007, 1011...), detach it."""
    return code is not None and (code in (1000, 1001) or 3000 <= code <= 4999)
