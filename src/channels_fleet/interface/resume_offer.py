"""A WebSocket handshake's resume offer, read at the interface (docs/resume-protocol.md §1).

The client offers ``channels-fleet.resume.v1``, to resume ``channels-fleet.session.<token>.<last>``,
then the app's own subprotocols. Every ``channels-fleet.*`` name is the fleet's, never the app's:
the scope the app gets (:func:`app_scope`) lists only its own, in the client's order, and its
``Sec-WebSocket-Protocol`` header says the same (the token is a bearer credential: no app, and
no app's log, sees it). The token is checked with the fleet's key (resume/token.py) before
anything else: a forged or mangled one is an offer of a new session, never a refusal.

    key = resume_key(settings.resume_key)      # None: resume is off
    offer, scope = negotiate(scope, key)
    if offer is None: ...                       # a plain WebSocket, as today
    elif offer.session_id is None: ...          # a new session
    else: ...                                   # resume offer.session_id after offer.last
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..resume.envelope import RESERVED_PREFIX, SUBPROTOCOL, parse_offer
from ..resume.token import SessionKey

_PROTOCOL_HEADER = b"sec-websocket-protocol"
#: The subprotocol an interface selects for a resumable socket (the app's goes in the hello).
SELECTED = SUBPROTOCOL


@dataclass(frozen=True, slots=True)
class ResumeOffer:
    """A client's offer of a resumable session, its token checked."""

    session_id: str | None  # the session to resume, its token's MAC checked (None: a new one)
    token: str | None  # ... and that token, to echo in the hello
    last: int  # the highest server frame the client has (0 for a new session)
    forged: bool  # a session was offered whose token this fleet did not issue
    origin: str  # the handshake's Origin ("" when none): checked again at a resume
    app: tuple[str, ...]  # the app's own subprotocols, in the client's order


def resume_key(secret: str) -> SessionKey | None:
    """The fleet's session key from ``CHANNELS_FLEET_RESUME_KEY``; None (resume off) if empty."""
    return SessionKey(secret.encode("utf-8")) if secret else None


def offered(scope: dict[str, Any]) -> list[str]:
    """The subprotocols the client offered, as the server put them in the scope."""
    return list(scope.get("subprotocols") or ())


def app_scope(scope: dict[str, Any], app: Sequence[str]) -> dict[str, Any]:
    """A copy of ``scope`` whose subprotocols, and ``Sec-WebSocket-Protocol`` header, list only
    ``app`` (the header goes when ``app`` is empty)."""
    out = dict(scope)
    out["subprotocols"] = list(app)
    headers = [(k, v) for k, v in scope.get("headers", ()) if bytes(k).lower() != _PROTOCOL_HEADER]
    if app:
        headers.append((_PROTOCOL_HEADER, ", ".join(app).encode("latin-1")))
    out["headers"] = headers
    return out


def _origin(scope: dict[str, Any]) -> str:
    for name, value in scope.get("headers", ()):
        if bytes(name).lower() == b"origin":
            return bytes(value).decode("latin-1")
    return ""


def negotiate(scope: dict[str, Any],
              key: SessionKey | None) -> tuple[ResumeOffer | None, dict[str, Any]]:
    """Read a WebSocket's offer: ``(the resume offer or None, the scope the app sees)``.

    None: the client offered no ``channels-fleet.resume.v1``, or resume is off (no key); the
    socket is a plain one. The app's scope never lists a ``channels-fleet.*`` name; when the
    client offered none, it is ``scope`` itself, untouched.
    """
    names = offered(scope)
    reserved = any(name.startswith(RESERVED_PREFIX) for name in names)
    offer = parse_offer(names)
    seen = app_scope(scope, offer.app) if reserved else scope
    if key is None or not offer.resume:
        return None, seen
    session_id = key.verify(offer.session) if offer.session is not None else None
    forged = offer.session is not None and session_id is None
    resume = ResumeOffer(
        session_id=session_id,
        token=offer.session if session_id is not None else None,
        last=offer.last if session_id is not None else 0,
        forged=forged,
        origin=_origin(scope),
        app=offer.app,
    )
    return resume, seen
