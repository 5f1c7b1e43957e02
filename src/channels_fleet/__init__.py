"""channels-fleet: Django Channels at scale.

Daphne interface processes hold the sockets, worker processes run the project's unchanged
Channels consumers, and a Redis Cluster channel layer carries everything between them.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def fleet_status(redis_url: Any = None, *, prefix: str | None = None) -> dict[str, Any]:
    """Every live interface and worker (name, sockets, closes, re-homes) and the work queue,
    read from their heartbeats: see :mod:`channels_fleet.fleet`.

        >>> [p["name"] for p in fleet_status()["processes"]]
        ['i1', 'i2', 'w1', 'w2']
    """
    from .fleet import fleet_status as read  # imports redis: only when asked

    return read(redis_url, prefix=prefix)
