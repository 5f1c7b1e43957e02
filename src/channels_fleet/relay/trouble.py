"""When this process last failed to reach Redis, which its heartbeat and its peer watch share.

A command that failed, took longer than its interval, or found our own heartbeat key lapsed
counts (monotonic time). A process that could not reach Redis cannot judge its peers: for the
grace after it (heartbeat TTL + beat interval) they may still be re-registering.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class RedisTrouble:
    """The last time Redis was away from this process, and how long its peers get after it."""

    at: float = 0.0
    grace: float = 0.0

    def seen(self) -> None:
        """Redis was away just now."""
        self.at = time.monotonic()

    def allow(self, grace: float) -> None:
        """Peers need at least ``grace`` seconds after trouble to beat again."""
        self.grace = max(self.grace, grace)


#: This process's (heartbeat threads and peer watches alike).
TROUBLE = RedisTrouble()
