"""The layer's ``hosts`` setting: which Redis servers, with which connection options.

``CHANNEL_LAYERS CONFIG 'hosts'`` takes what channels_redis takes (URLs, ``{"address": url,
**options}`` dicts, ``(host, port)`` pairs); each becomes ``(url, extra options)``, and the
connection options of a node are redis-py's reading of its URL plus those extras.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.connection import parse_url

from ..exceptions import LayerConfigError

DEFAULT_URL = "redis://localhost:6379"
# Longer than any server-side block (``Router.block_timeout``: half of it at most).
DEFAULT_SOCKET_TIMEOUT = 5.0
# A connect inside a data centre takes well under a millisecond; a node that died takes its IP
# with it, and every command queued for it waits out this timeout.
DEFAULT_CONNECT_TIMEOUT = 2.0


def decode_hosts(hosts: Any) -> list[tuple[str, dict[str, Any]]]:
    """Normalise ``hosts`` to ``[(url, extra connection kwargs)]``.

    Accepts URLs and channels_redis's ``{"address": url, **kwargs}`` dicts.
    """
    if not hosts:
        return [(DEFAULT_URL, {})]
    if isinstance(hosts, (str, bytes)):
        raise LayerConfigError(
            "CHANNEL_LAYERS CONFIG 'hosts' must be a list of redis:// URLs, even for one server; "
            f"got the string {hosts!r}"
        )
    result: list[tuple[str, dict[str, Any]]] = []
    for entry in hosts:
        if isinstance(entry, str):
            result.append((entry, {}))
        elif isinstance(entry, dict) and isinstance(entry.get("address"), str):
            extra = dict(entry)
            result.append((extra.pop("address"), extra))
        elif isinstance(entry, (tuple, list)) and len(entry) == 2:
            result.append((f"redis://{entry[0]}:{entry[1]}", {}))
        else:
            raise LayerConfigError(
                "each entry of CHANNEL_LAYERS CONFIG 'hosts' must be a redis:// or rediss:// URL "
                f"or a dict with an 'address' URL; got {entry!r}"
            )
    for url, _ in result:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise LayerConfigError(
                f"CHANNEL_LAYERS CONFIG 'hosts' entry {url!r} is not a redis:// or rediss:// URL"
            )
    return result


def connection_kwargs(url: str, extra: dict[str, Any]) -> dict[str, Any]:
    """Connection options for ``url`` (redis-py's URL syntax) plus the user's extra options."""
    options: dict[str, Any] = dict(parse_url(url))
    options.update(extra)
    options.setdefault("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
    options.setdefault("socket_connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    return options
