"""The relay's items and fields for resumable sessions (docs/resume-protocol.md), and their checks.

A resumable socket's connect envelopes carry ``"session"``: the session id (32 hex digits, the
registry's key) and where its numbering stands (:func:`session_mark`)::

    {"id": "9f0c...e1", "seq": 12, "ack": 7}

A socket resumed away from its home (the interface whose LIST holds the consumer's homed
channel) adds ``"home"`` (that interface's relay channel) and ``"home_claim"`` (the claim its
DETACHED connection forwards that channel under): the session keeps its home when it moves.

A client frame's ``websocket.receive`` event and an app's ``websocket.send`` carry their sequence
number as ``"fleet_seq"`` (:func:`parse_seq`). The items below (``[kind, claim, payload]``, as in
wire.py, whose ``parse_item`` checks their payload's type) move a session between sockets; a list
payload is checked by its own ``parse_*`` here, as wire.py's ACK, MESSAGE and KEPT are::

    interface -> worker  DETACH       close code        the socket ended, the session did not
                         CLIENT_ACK   seq               the client has every server frame <= seq
                         RESUME       [id, last, origin]  take the session over for this claim
    worker -> interface  RESUMED      [ack, protocol, channel, home, home_claim]  taken over;
                                      the replayed SENDs follow (the homed channel, its home
                                      and the claim the home knows: "" = none)
                         NO_SESSION   reason            no such session here: start a new one
                         SUPERSEDE    close code        another socket resumed it: close this one
                         SESSION_END  [code, reason]    the app ended it: X, then its close
    both ways            OUTBOX       [seq, ack, [[seq, message], ...]]  a drained owner's
                                      unacknowledged frames and marks, for the next owner

The registry entry of session ``id`` is :func:`session_key`.
"""

from __future__ import annotations

import re
from typing import Any, Required, TypedDict

from ..exceptions import WireError

DETACH = "detach"
CLIENT_ACK = "cack"
RESUME = "resume"
RESUMED = "resumed"
NO_SESSION = "no-session"
SUPERSEDE = "supersede"
SESSION_END = "session-end"
OUTBOX = "outbox"

#: The payload type of each item kind above (merged into wire.py's table).
ITEM_PAYLOADS: dict[str, tuple[type, ...]] = {
    DETACH: (int,), CLIENT_ACK: (int,), RESUME: (list,), RESUMED: (list,), NO_SESSION: (str,),
    SUPERSEDE: (int,), SESSION_END: (list,), OUTBOX: (list,),
}

#: Why a worker answers NO_SESSION (resume_refused_total's reasons, on the interface).
NO_SESSION_REASONS = frozenset({"unknown", "ended", "unreplayable", "origin", "draining"})

#: The key of a frame's sequence number in its ``websocket.receive`` / ``websocket.send``.
FLEET_SEQ = "fleet_seq"
#: Highest sequence number (exact in a JavaScript number; resume.envelope.MAX_SEQ).
MAX_SEQ = 2**53 - 1

_SESSION_ID = re.compile(r"[0-9a-f]{32}", re.ASCII)


class SessionMark(TypedDict, total=False):
    """A connect envelope's ``"session"``: the session and where its numbering stands."""

    id: Required[str]  # 32 hex digits (resume/token.py's session id)
    seq: Required[int]  # the last server frame numbered (0: none yet)
    ack: Required[int]  # the last client frame relayed to an app (0: none yet)
    home: str  # a home other than the envelope's iface: its relay channel
    home_claim: str  # ... and the claim its connection forwards the homed channel under


def session_key(session_id: str, prefix: str) -> str:
    """The registry entry of a session, a hash: ``fleet:session:{9f0c...e1}``."""
    return f"{prefix}:session:{{{session_id}}}"


def session_mark(session_id: str, seq: int = 0, ack: int = 0, home: str = "",
                 home_claim: str = "") -> SessionMark:
    """The ``"session"`` field of a resumable socket's connect envelope (``home``: a home
    elsewhere, with its ``home_claim``)."""
    mark: SessionMark = {"id": session_id, "seq": seq, "ack": ack}
    if home:
        mark["home"], mark["home_claim"] = home, home_claim
    return mark


def _is_seq(value: Any, low: int = 0) -> bool:
    return type(value) is int and low <= value <= MAX_SEQ


def _is_code(value: Any) -> bool:
    return type(value) is int and 1000 <= value <= 4999


def parse_session(value: Any) -> SessionMark:
    """Check an envelope's ``"session"``; return it or raise WireError."""
    if not (type(value) is dict and type(value.get("id")) is str
            and _SESSION_ID.fullmatch(value["id"]) is not None):
        raise WireError("bad 'session': no 32-hex-digit id")
    if not (_is_seq(value.get("seq")) and _is_seq(value.get("ack"))):
        raise WireError("bad 'session': seq and ack must be integers 0..2**53-1")
    home, home_claim = value.get("home"), value.get("home_claim")
    if home is None and home_claim is None:
        return SessionMark(id=value["id"], seq=value["seq"], ack=value["ack"])
    if not (type(home) is str and home and type(home_claim) is str and home_claim):
        raise WireError("bad 'session': home and home_claim must be non-empty strings")
    return SessionMark(id=value["id"], seq=value["seq"], ack=value["ack"], home=home,
                       home_claim=home_claim)


def parse_seq(message: dict[str, Any]) -> int | None:
    """The sequence number of a relayed frame (``fleet_seq``), None if it has none."""
    seq = message.get(FLEET_SEQ)
    if seq is None:
        return None
    if not _is_seq(seq, 1):
        raise WireError(f"bad {FLEET_SEQ!r} in a {message.get('type')!r:.40} message")
    return int(seq)


def parse_code(kind: str, code: int) -> int:
    """Check a DETACH or SUPERSEDE item's close code (1000..4999); return it or WireError."""
    if not _is_code(code):
        raise WireError(f"bad close code for a {kind} item")
    return code


def parse_client_ack(seq: int) -> int:
    """Check a CLIENT_ACK item's payload (a sequence number); return it or WireError."""
    if not _is_seq(seq):
        raise WireError(f"bad payload for a {CLIENT_ACK} item")
    return seq


def parse_resume(payload: list[Any]) -> tuple[str, int, str]:
    """Check a RESUME item's payload ``[session id, last, origin]``; return it or WireError."""
    if not (len(payload) == 3 and type(payload[0]) is str
            and _SESSION_ID.fullmatch(payload[0]) is not None
            and _is_seq(payload[1]) and type(payload[2]) is str):
        raise WireError(f"bad payload for a {RESUME} item")
    return payload[0], payload[1], payload[2]


def parse_resumed(payload: list[Any]) -> tuple[int, str | None, str, str, str]:
    """Check a RESUMED item's payload ``[ack, protocol, channel, home, home_claim]`` (""
    = none); return ``(ack, protocol or None, channel, home, home_claim)`` or WireError."""
    if not (len(payload) == 5 and _is_seq(payload[0])
            and all(type(field) is str for field in payload[1:])):
        raise WireError(f"bad payload for a {RESUMED} item")
    if payload[2] and not (payload[3] and payload[4]):
        raise WireError(f"bad payload for a {RESUMED} item: a channel with no home")
    return payload[0], payload[1] or None, payload[2], payload[3], payload[4]


def parse_no_session(reason: str) -> str:
    """Check a NO_SESSION item's reason (one of NO_SESSION_REASONS); return it or WireError."""
    if reason not in NO_SESSION_REASONS:
        raise WireError(f"unknown reason {reason!r:.40} in a {NO_SESSION} item")
    return reason


def parse_session_end(payload: list[Any]) -> tuple[int, str]:
    """Check a SESSION_END item's payload ``[code, reason]``; return it or WireError."""
    if not (len(payload) == 2 and _is_code(payload[0]) and type(payload[1]) is str):
        raise WireError(f"bad payload for a {SESSION_END} item")
    return payload[0], payload[1]


def parse_outbox(payload: list[Any]) -> tuple[int, int, list[tuple[int, dict[str, Any]]]]:
    """Check an OUTBOX item's payload ``[seq, ack, [[seq, message], ...]]``: the frames'
    numbers rise by one and end at ``seq``; return it or WireError."""
    if not (len(payload) == 3 and _is_seq(payload[0]) and _is_seq(payload[1])
            and type(payload[2]) is list):
        raise WireError(f"bad payload for an {OUTBOX} item")
    seq, ack, entries = payload
    frames: list[tuple[int, dict[str, Any]]] = []
    expected = seq - len(entries) + 1
    for entry in entries:
        if not (type(entry) is list and len(entry) == 2 and entry[0] == expected
                and _is_seq(entry[0], 1) and type(entry[1]) is dict
                and type(entry[1].get("type")) is str):
            raise WireError(f"bad frame in an {OUTBOX} item")
        frames.append((entry[0], entry[1]))
        expected += 1
    return seq, ack, frames
