"""What the layer does when the Redis user's ACL refuses a command.

A command the layer needs and may not run fails with :class:`RedisPermissionError`, whose
message names the server, the command (a script with the commands it calls), the key and the
rule that is missing; the first refusal of each command is also logged once, at ERROR. The one
command the layer can do without is ``CLIENT UNBLOCK`` (``@admin``, ``@dangerous``), and the
``CLIENT ID`` it needs: refused, a receive given up as its event loop closes waits out its
BLMPOP's block (at most ``connection.MAX_BLOCK_SECONDS``) instead of waking it, one INFO line
says so, and neither is asked again. What runs beside the layer on redis-py clients
(heartbeats, peer watch, worker room, queue metrics, ``fleet_status()``) names its refusals
with :func:`naming`. docs/redis-acl.md gives the rules of each role.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

from redis import exceptions as rx
from redis.connection import parse_url

from ..exceptions import RedisAccessError, RedisPermissionError
from ..redis_access import CA_OPTION, display
from .access import access_error
from .scripts import BY_SHA

logger = logging.getLogger(__name__)

#: What Redis answers for a command (or a key) the user may not touch: ``NOPERM ...``, or from
#: inside a script ``ERR The user executing the script can't run this command ...`` (7.0) /
#: ``ERR ACL failure in script: ...`` (7.2+, Valkey).
_IN_SCRIPT = re.compile(r"can't run this command|ACL failure in script|no permissions to")

_logged: set[str] = set()  # commands whose refusal was logged (once per process)


def is_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a command or key to this user (its ACL)."""
    if isinstance(exc, rx.NoPermissionError):
        return True
    return isinstance(exc, rx.ResponseError) and bool(_IN_SCRIPT.search(str(exc)))


def command_name(args: Sequence[Any]) -> str:
    """``("EVALSHA", sha, ...)`` -> ``EVALSHA send (LLEN, LINDEX, ...)``; ``CLIENT UNBLOCK``."""
    name = _text(args[0]).upper()
    if name in ("CLIENT", "SCRIPT", "CLUSTER") and len(args) > 1:
        return f"{name} {_text(args[1]).upper()}"
    if name == "EVALSHA" and len(args) > 1:
        script = BY_SHA.get(_text(args[1]))
        if script is not None:
            return f"EVALSHA {script.name} (calls {', '.join(script.calls)})"
    return name


def refused(address: str, user: str | None, args: Sequence[Any] | str, key: str | None,
            exc: BaseException, *, log: bool = True) -> RedisPermissionError:
    """The error for ``args`` (or a command's description) refused by Redis ``address``;
    logged the first time (unless ``log`` is false: the caller reports it)."""
    command = args if isinstance(args, str) else command_name(args)
    who = f"user {user!r}" if user else "the default user"
    on = f" on key {key}" if key else ""
    error = RedisPermissionError(
        f"Redis {address} refused {command}{on} to {who}: {exc}; the user's ACL needs this "
        "command and key pattern (docs/redis-acl.md gives the rules of each role)"
    )
    if log and command not in _logged:
        _logged.add(command)
        logger.error("%s", error)
    return error


@contextlib.contextmanager
def naming(url: str, command: str, key: str | None = None) -> Iterator[None]:
    """For redis-py clients: a refusal inside becomes :class:`RedisPermissionError` naming
    ``command``, ``key``, the server of ``url`` and its user (Redis names no key); the caller
    reports it (not logged here). A certificate that fails the check or a refused AUTH becomes
    :class:`RedisAccessError` (access.py), naming ``url`` and ``command``.

        with acl.naming(url, "LINDEX", key):
            head = client.lindex(key, 0)
    """
    try:
        yield
    except Exception as exc:  # RedisClusterException is no RedisError
        cause = _refusal_in(exc)
        if cause is None:
            denied = _access_error(url, command, exc)
            if denied is None:
                raise
            raise denied from exc
        if cause is not exc:  # redis-py's cluster client wraps what its start was refused
            named = _NAMED.search(str(cause))
            command = named.group(1).replace("|", " ").upper() if named else command
            key = None
        try:
            options: dict[str, Any] = parse_url(url)
        except ValueError:  # no URL given: the server goes unnamed
            options = {"host": "(unknown)", "port": "?"}
        address = f"{options.get('host', 'localhost')}:{options.get('port', 6379)}"
        raise refused(address, options.get("username"), command, key, cause,
                      log=False) from exc


def _access_error(url: str, command: str, exc: BaseException) -> RedisAccessError | None:
    try:
        options: dict[str, Any] = parse_url(url)
    except ValueError:
        return None
    return access_error(display(url), options.get("username"), command,
                        options.get(CA_OPTION), exc)


_NAMED = re.compile(r"run the '([^']+)' command")


def _refusal_in(exc: BaseException) -> BaseException | None:
    """``exc`` or the error it was raised from or during, if one is a refusal."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if is_refusal(current):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class Wake:
    """Whether this process may wake a blocked BLMPOP: ``CLIENT ID`` then ``CLIENT UNBLOCK``."""

    def __init__(self) -> None:
        self.refused = False

    def refuse(self, address: str, command: str, exc: BaseException) -> None:
        """``command`` was refused: say so once, and ask neither again."""
        if self.refused:
            return
        self.refused = True
        logger.info(
            "%s: Redis refused %s to this user (%s): a receive given up as its event loop "
            "closes waits out its BLMPOP (up to its block) instead of waking it; nothing is "
            "lost. Not asked again (grant +client|id +client|unblock to wake it at once)",
            address, command, exc,
        )


#: One per process: an ACL is the same on every node of a cluster.
WAKE = Wake()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
