"""Background channels (what ``runworker`` did): the project's ``ChannelNameRouter`` consumers.

``channels-fleet worker APP --channels a,b`` serves the channels ``a`` and ``b`` of the
project's layer beside the relayed connections, with Channels' own ``Worker``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


async def serve_background(application: Any, channels: Sequence[str]) -> None:
    """Run ``application``'s ``channel`` consumers for ``channels`` until cancelled; a failure
    (no "channel" entry in the ProtocolTypeRouter) is logged and the sockets go on."""
    from channels.layers import get_channel_layer
    from channels.worker import Worker

    names = ", ".join(channels)
    worker = Worker(application, list(channels), get_channel_layer())
    logger.info("serving background channels %s", names)
    try:
        await worker.arun()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        logger.error("background channels %s stopped: %r", names, exc)
