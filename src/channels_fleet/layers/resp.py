"""A lean, pipelined RESP2 connection on an asyncio Protocol.

redis-py's asyncio client pays a task (``wait_for``) and a timeout context per command; at
one awaited command per message that cost is most of the layer's CPU. Here every command
written in the same event-loop tick leaves in one ``write()`` and its reply resolves a plain
future (auto-pipelining). A timer aborts the connection when the oldest reply is overdue
(``socket_timeout``), which fails every pending command with ``TimeoutError``.

Errors replies are turned into redis-py's exception classes (MovedError, AskError,
NoScriptError, ...) so that callers classify failures the usual way.

With the ``hiredis`` wheel installed (a dependency on CPython), commands are encoded and
replies parsed in C: together a fifth of the layer's CPU per message in pure Python
(docs/benchmarks.md). Without it, the pure-Python encoder and parser below do the same work.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from redis import exceptions as rx
from redis._parsers.base import BaseParser

from . import access

try:
    import hiredis
except ImportError:  # the optional wheel: the pure-Python path below does the same
    hiredis = None  # type: ignore[assignment]

CRLF = b"\r\n"
#: What a parser's ``gets()`` returns while the buffer holds no whole reply yet.
INCOMPLETE: Any = object()


class _Incomplete(Exception):
    """Not enough bytes buffered for a whole reply yet."""


def pack(args: tuple[Any, ...]) -> bytes:
    """Encode one command as a RESP array of bulk strings."""
    if hiredis is not None:
        try:
            return hiredis.pack_command(args)  # type: ignore[no-any-return]
        except TypeError:  # memoryview, bytearray (copied below), or what Redis cannot store
            pass
    return pack_python(args)


def pack_python(args: tuple[Any, ...]) -> bytes:
    """:func:`pack` without hiredis."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            data = arg
        elif kind is str:
            data = arg.encode()
        elif kind is int:
            data = b"%d" % arg
        elif kind is float:
            data = repr(arg).encode()
        elif isinstance(arg, (bytes, bytearray, memoryview)):
            data = bytes(arg)
        else:
            raise rx.DataError(f"cannot send {kind.__name__} to Redis: {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class Parser:
    """Incremental RESP2 reply parser (pure Python; errors become redis-py exceptions)."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.pos = 0

    def feed(self, data: bytes) -> None:
        if self.pos and self.pos == len(self.buffer):
            self.buffer.clear()
            self.pos = 0
        self.buffer += data

    def gets(self) -> Any:
        """Return the next whole reply, or INCOMPLETE."""
        start = self.pos
        try:
            reply = self._read()
        except _Incomplete:
            self.pos = start
            return INCOMPLETE
        if self.pos > 65536:
            del self.buffer[: self.pos]
            self.pos = 0
        return reply

    def _line(self) -> bytes:
        end = self.buffer.find(CRLF, self.pos)
        if end < 0:
            raise _Incomplete
        line = bytes(self.buffer[self.pos : end])
        self.pos = end + 2
        return line

    def _read(self) -> Any:
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"$":
            length = int(rest)
            if length < 0:
                return None
            end = self.pos + length
            if len(self.buffer) < end + 2:
                raise _Incomplete
            data = bytes(self.buffer[self.pos : end])
            self.pos = end + 2
            return data
        if kind == b"*":
            count = int(rest)
            if count < 0:
                return None
            return [self._read() for _ in range(count)]
        if kind == b":":
            return int(rest)
        if kind == b"+":
            return rest
        if kind == b"-":
            return reply_error(rest.decode("utf-8", "replace"))
        raise rx.InvalidResponse(f"protocol error: {line[:40]!r}")


def reply_error(message: str) -> Exception:
    """The exception an error reply stands for (returned in place of the reply)."""
    if message.startswith("UNBLOCKED"):
        return UnblockedError(message)
    return BaseParser.parse_error(message)


def new_parser() -> Any:
    """hiredis's Reader where installed, else :class:`Parser`: ``feed(bytes)``, ``gets()``."""
    if hiredis is None:
        return Parser()
    return hiredis.Reader(protocolError=rx.InvalidResponse, replyError=reply_error,
                          notEnoughData=INCOMPLETE)


class UnblockedError(rx.ResponseError):
    """The server woke a blocked command because it changed role (its master became a replica
    in a failover): the key lives elsewhere now."""


class _Replies:
    """The replies of one batch, in order; its future gets them all once the last is in.

    It waits in a connection's queue in place of each of the batch's command futures (the
    same ``done``/``set_result``/``set_exception``), so a flush of many commands costs one
    future, not one each. An error takes its command's place in the list.
    """

    __slots__ = ("future", "replies", "count")

    def __init__(self, future: asyncio.Future[list[Any]], count: int) -> None:
        self.future = future
        self.replies: list[Any] = []
        self.count = count

    def done(self) -> bool:
        return self.future.done()

    def set_result(self, reply: Any) -> None:
        self.replies.append(reply)
        if len(self.replies) == self.count:
            self.future.set_result(self.replies)

    set_exception = set_result


Waiting = asyncio.Future[Any] | _Replies  # what a sent command's reply goes to


class RespConnection(asyncio.Protocol):
    """One TCP (or TLS, or unix socket) connection; commands are pipelined, replies in order."""

    def __init__(self, address: str, socket_timeout: float | None) -> None:
        self.address = address
        self.socket_timeout = socket_timeout
        self.transport: asyncio.Transport | None = None
        self.parser = new_parser()
        self.pending: deque[tuple[Waiting, float]] = deque()
        self.outgoing: list[bytes] = []
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._error: BaseException | None = None
        self.client_id: int | None = None  # CLIENT ID, for CLIENT UNBLOCK (set by its owner)

    @classmethod
    async def open(
        cls, address: str, options: dict[str, Any], socket_timeout: float | None,
        command: str = "a command",
    ) -> RespConnection:
        """Connect, then AUTH / SELECT / CLIENT SETNAME as the URL asks. A certificate that
        fails the check or a refused AUTH raises RedisAccessError naming ``command`` (what
        the connection is for)."""
        loop = asyncio.get_running_loop()
        connect_timeout = options.get("socket_connect_timeout") or socket_timeout or 5.0
        conn = cls(address, socket_timeout)
        try:
            async with asyncio.timeout(connect_timeout):
                if options.get("path"):
                    await loop.create_unix_connection(lambda: conn, options["path"])
                else:
                    host, _, port = address.rpartition(":")
                    await loop.create_connection(
                        lambda: conn, host, int(port), ssl=_ssl_context(options)
                    )
        except TimeoutError:
            raise rx.TimeoutError(f"timeout connecting to {address}") from None
        except OSError as exc:
            refused = access.tls_error(_display(address, options), command,
                                       options.get("ssl_ca_certs"), exc)
            if refused is not None:
                raise refused from exc
            raise rx.ConnectionError(f"cannot connect to {address}: {exc}") from exc
        setup: list[tuple[Any, ...]] = []
        if options.get("password"):
            if options.get("username"):
                setup.append(("AUTH", options["username"], options["password"]))
            else:
                setup.append(("AUTH", options["password"]))
        if options.get("db"):
            setup.append(("SELECT", int(options["db"])))
        if options.get("client_name"):
            setup.append(("CLIENT", "SETNAME", options["client_name"]))
        try:
            replies = await conn.batch(setup)
        except BaseException:  # cancelled: nobody else would close it
            conn.close()
            raise
        for (name, *_), reply in zip(setup, replies, strict=True):
            if isinstance(reply, BaseException):
                conn.close()
                refused = access.auth_error(_display(address, options), options.get("username"),
                                            name, reply) if name == "AUTH" else None
                if refused is not None:
                    raise refused from reply
                raise reply
        return conn

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        parser = self.parser
        parser.feed(data)
        pending = self.pending
        while pending:
            try:
                reply = parser.gets()
            except Exception as exc:  # corrupt stream: nothing after this can be trusted
                self._fail(rx.InvalidResponse(f"{self.address}: {exc}"))
                return
            if reply is INCOMPLETE:
                break
            future = pending.popleft()[0]
            if not future.done():
                if isinstance(reply, BaseException):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(self._error or rx.ConnectionError(
            f"connection to {self.address} lost" + (f": {exc}" if exc else "")
        ))

    # Commands

    def command(self, *args: Any, timeout: float | None = None) -> asyncio.Future[Any]:
        """Queue one command; the future gets its reply (or the error as exception)."""
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue(pack(args), future, timeout)
        return future

    def batch(self, commands: Sequence[tuple[Any, ...]]) -> asyncio.Future[list[Any]]:
        """Queue commands that leave with this tick's others, in one write; the future gets
        all their replies, in order, an error in place of its command's reply."""
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        if not commands:
            future.set_result([])
            return future
        replies = _Replies(future, len(commands))
        for args in commands:
            self._queue(pack(args), replies, None)
        return future

    def _queue(self, packed: bytes, waiting: Waiting, timeout: float | None) -> None:
        if self.closed:
            waiting.set_exception(self._error or rx.ConnectionError(f"{self.address} closed"))
            return
        limit = timeout if timeout is not None else self.socket_timeout
        deadline = time.monotonic() + limit if limit else float("inf")
        self.pending.append((waiting, deadline))
        self.outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        if limit and self._watchdog is None:
            self._watchdog = self._loop.call_later(limit, self._check_overdue)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self.outgoing and self.transport is not None and not self.closed:
            data = b"".join(self.outgoing)
            self.outgoing = []
            self.transport.write(data)

    def _check_overdue(self) -> None:
        self._watchdog = None
        if not self.pending or self.closed:
            return
        now = time.monotonic()
        deadline = self.pending[0][1]
        if deadline <= now:
            self._error = rx.TimeoutError(f"timeout reading from {self.address}")
            self.close()
            return
        if deadline != float("inf"):
            self._watchdog = self._loop.call_later(deadline - now, self._check_overdue)

    def _fail(self, exc: BaseException) -> None:
        self.closed = True
        self._error = exc
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        pending, self.pending = self.pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(exc)
        self.outgoing = []

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(self._error or rx.ConnectionError(f"connection to {self.address} closed"))


def _display(address: str, options: dict[str, Any]) -> str:
    """The server as error lines name it: scheme, user, address; never the password."""
    scheme = "rediss" if _uses_tls(options) else "redis"
    user = f"{options['username']}@" if options.get("username") else ""
    return f"{scheme}://{user}{address}"


def _uses_tls(options: dict[str, Any]) -> bool:
    connection_class = options.get("connection_class")
    return bool(options.get("ssl")) or "SSL" in getattr(connection_class, "__name__", "")


def _ssl_context(options: dict[str, Any]) -> ssl.SSLContext | None:
    if not _uses_tls(options):
        return None
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if str(options.get("ssl_cert_reqs", "required")).lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif options.get("ssl_check_hostname") is False:
        context.check_hostname = False
    return context
