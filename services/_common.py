"""What every channels-fleet service does the same way: logging, startup failures, probes."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

STARTUP_FAILURE = 3  # exit status of a service that could not start (as uvicorn)

logger = logging.getLogger("channels_fleet.services")


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(process)d %(name)s: %(message)s",
        stream=sys.stderr,
    )


async def start_probes(
    port: int, readiness: Callable[[], Awaitable[tuple[bool, str]]], component: str
) -> Any:
    """Start /healthz, /readyz and /metrics on ``port`` (0: none); returns the server or None."""
    if not port:
        return None
    from channels_fleet.probes import ProbeServer

    probes = ProbeServer("0.0.0.0", port, readiness=readiness, component=component)
    await probes.start()
    return probes
