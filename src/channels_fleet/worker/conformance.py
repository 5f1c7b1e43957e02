"""What an app may send, per message type and connection phase, checked as Daphne checks it;
which of its failures are Channels' "no route".

Under Daphne the app's ``send()`` raises when a message cannot go out (``ValueError:
Specifying a status code is required for a Response message.``) and nothing is written. In
the split the interface's Daphne would only find out after the worker's ``send()`` returned,
so the worker checks first (:func:`check`, called by ``Host`` for every message), raising the
exception type Daphne's ``send()`` raises:

- ``KeyError``: no ``type`` (Daphne reads ``message["type"]``);
- ``ValueError``: a message the phase does not allow (``http.response.body`` before
  ``http.response.start``, a second start, ``websocket.send`` before ``websocket.accept``, a
  second accept), an unknown type, a missing ``status``, headers that are not ``(bytes,
  bytes)`` pairs or not valid HTTP, a ``websocket.send`` with both ``text`` and ``bytes``;
- ``TypeError``: a value of the wrong type (``status`` not an int, ``body`` not bytes,
  headers not iterable, ``text`` not a str, ``bytes`` not bytes, ``code`` not an int).

Daphne raises ``AttributeError``, ``AssertionError`` or a bare ``Exception`` for some of these
by accident (a second accept, ``text`` as bytes, a close code as a string); here they are the
``ValueError`` or ``TypeError`` above. What Daphne drops silently is dropped here too, by the
host: anything after the response ended or the socket closed (a group message may arrive
between the app's close and its disconnect).

    check(message, ws=True, accepted=False)   # raises, or returns the message's type
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable
from typing import Any

#: What :func:`check` raises.
INVALID = (KeyError, ValueError, TypeError)

# RFC 9110 token (h11's and Daphne's header name rule); values without CR, LF or NUL.
_HEADER_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
_HEADER_VALUE_FORBIDDEN = re.compile(rb"[\r\n\x00]")

_WS_BEFORE_ACCEPT = ("websocket.accept", "websocket.close")
_WS_AFTER_ACCEPT = ("websocket.send", "websocket.close")


def check(message: Any, *, ws: bool, accepted: bool) -> str:
    """Check one message of the app for a connection in this phase; return its type.

    ``ws``: a WebSocket (else HTTP); ``accepted``: the socket accepted / the response
    started. Raises ``KeyError``, ``ValueError`` or ``TypeError`` (see the module's doc).
    """
    if not isinstance(message, dict):
        raise TypeError(f"an ASGI message is a dict, not {type(message).__name__}")
    kind = message["type"]
    if ws:
        _websocket(kind, message, accepted)
    else:
        _http(kind, message, accepted)
    return str(kind)


def _http(kind: Any, message: dict[str, Any], started: bool) -> None:
    if kind == "http.response.start":
        if started:
            raise ValueError("HTTP response has already been started")
        if "status" not in message:
            raise ValueError("Specifying a status code is required for a Response message.")
        status = message["status"]
        if not isinstance(status, int) or isinstance(status, bool):
            raise TypeError(f"status must be an int, not {type(status).__name__}")
        if not 100 <= status <= 599:
            raise ValueError(f"status {status} is not an HTTP status code (100-599)")
        check_headers(message.get("headers", ()))
    elif kind == "http.response.body":
        if not started:
            raise ValueError(f"HTTP response has not yet been started but got {kind}")
        body = message.get("body", b"")
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
    else:
        raise ValueError(f"Cannot handle message type {kind}!")


def _websocket(kind: Any, message: dict[str, Any], accepted: bool) -> None:
    allowed = _WS_AFTER_ACCEPT if accepted else _WS_BEFORE_ACCEPT
    if kind not in allowed:
        if kind == "websocket.send":
            raise ValueError("Socket has not been accepted, so cannot send over it")
        if kind == "websocket.accept":
            raise ValueError("Socket has already been accepted")
        raise ValueError(f"Cannot handle message type {kind}! (expected {' or '.join(allowed)})")
    if kind == "websocket.send":
        check_frame(message)
    elif kind == "websocket.accept":
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and not isinstance(subprotocol, str):
            raise TypeError(f"subprotocol must be a str, not {type(subprotocol).__name__}")
        check_headers(message.get("headers") or ())
    else:
        code = message.get("code")
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise TypeError(f"close code must be an int, not {type(code).__name__}")
        reason = message.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise TypeError(f"close reason must be a str, not {type(reason).__name__}")


def check_frame(message: dict[str, Any]) -> None:
    """A ``websocket.send``: ``text`` a str or ``bytes`` bytes, not both (as Daphne)."""
    text, data = message.get("text"), message.get("bytes")
    if text is not None and not isinstance(text, str):
        raise TypeError(f"text must be a str, not {type(text).__name__}")
    if data is not None and not isinstance(data, bytes):
        raise TypeError(f"bytes must be bytes, not {type(data).__name__}")
    if text and data:
        raise ValueError("Got invalid WebSocket reply message - contains both bytes and text keys")


def check_headers(headers: Iterable[Any]) -> None:
    """Headers are ``(name, value)`` pairs of bytes, a valid name and a value without CR/LF."""
    for header in headers:  # TypeError if not iterable, as Daphne's loop raises
        name, value = header  # ValueError if not a pair (TypeError if not iterable)
        if not isinstance(name, bytes):
            raise ValueError(f"Header name '{name}' expected to be `bytes`, "
                             f"but got `{type(name)}`")
        if not isinstance(value, bytes):
            raise ValueError(f"Header value '{value}' expected to be `bytes`, "
                             f"but got `{type(value)}`")
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"invalid header name {name!r}")
        if _HEADER_VALUE_FORBIDDEN.search(value):
            raise ValueError(f"invalid header value {value!r} for {name!r} (CR, LF or NUL)")


def sender(task: Any, application: Any) -> str:
    """Who sent a message: the Channels consumer on the way to the ``send()`` being checked
    (its ``module.Class``), else the application's name. Only read when a message is refused.

    An ``AsyncConsumer`` calls ``send()`` from its own task: its frames are on the stack. A
    ``SyncConsumer`` calls it from a thread, through ``async_to_sync``, while the consumer's
    ``__call__`` waits in its task: there it is on the task's chain of awaits.
    """
    from channels.consumer import AsyncConsumer

    frame = inspect.currentframe()
    frames = []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    coro = task.get_coro() if task is not None else None
    while coro is not None:
        if getattr(coro, "cr_frame", None) is not None:
            frames.append(coro.cr_frame)
        coro = getattr(coro, "cr_await", None)
    for frame in frames:
        this = frame.f_locals.get("self")
        if isinstance(this, AsyncConsumer):
            cls = type(this)
            return f"{cls.__module__}.{cls.__qualname__}"
    cls = application if callable(application) and hasattr(application, "__qualname__") else type(
        application)
    return f"{cls.__module__}.{cls.__qualname__}"


def caused_by(exc: BaseException, cause: BaseException | None) -> bool:
    """Is ``exc`` the exception ``cause``, or raised while handling it (an app that wraps a
    refused ``send()``'s error)?"""
    seen: BaseException | None = exc
    while cause is not None and seen is not None:
        if seen is cause:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def unrouted(exc: BaseException) -> bool:
    """Did Channels' ``URLRouter`` find no route? Told by where the error was raised, not by
    its text: a ValueError raised in ``URLRouter.__call__`` itself (the outermost router's
    refusal; nested routers raise Resolver404 to it), not in an app it routed to."""
    from channels.routing import URLRouter

    if not isinstance(exc, ValueError) or exc.__traceback__ is None:
        return False
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code is URLRouter.__call__.__code__
