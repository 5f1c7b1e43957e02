"""Who served this connection: the interface and the worker from ``scope["fleet"]`` (their
relay channels), by the names the fleet's status gives them (``i1``, ``w2``; pod names in
Kubernetes)."""

import asyncio
import os

from fleetview.status import names


def served_by(scope) -> dict:
    """Blocks briefly on a cache miss (a Redis read): from async code use ``served_by_async``."""
    fleet = (scope or {}).get("fleet")
    if fleet is None:  # not relayed: a single-process server (runserver, daphne) or gunicorn
        return {"interface": None, "worker": f"pid {os.getpid()}", "rehomed": 0}
    known = names()
    return {"interface": known.get(fleet.get("interface"), fleet.get("interface")),
            "worker": known.get(fleet.get("worker"), fleet.get("worker")),
            "rehomed": fleet.get("rehomed", 0)}


async def served_by_async(scope) -> dict:
    if (scope or {}).get("fleet") is None:
        return served_by(scope)
    return await asyncio.to_thread(served_by, scope)
