"""The back-off policy of every retry loop: how long to wait after so many failures in a row.

As redis-py's ``ExponentialBackoff`` / ``EqualJitterBackoff``: the wait doubles from ``base``
up to ``cap``; with ``jitter`` it is drawn from its upper half, so processes that failed
together do not retry together.

    RETRY = Backoff(base=0.05, cap=0.5)
    failures = 0
    while True:
        try:
            return await connect()
        except ConnectionError:
            failures += 1
            await asyncio.sleep(RETRY.delay(failures))  # 0.05, 0.1, 0.2, 0.4, 0.5, 0.5, ...
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2**64 times any base is past every cap: larger exponents would overflow a float.
_MAX_DOUBLINGS = 64


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off: ``base`` seconds after the first failure, doubling up to ``cap``."""

    base: float
    cap: float
    jitter: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.base <= self.cap:
            raise ValueError(f"Backoff needs 0 <= base <= cap; got base={self.base}, "
                             f"cap={self.cap}")

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (1 for the first)."""
        wait = min(self.cap, self.base * 2 ** min(max(failures - 1, 0), _MAX_DOUBLINGS))
        return wait / 2 + random.uniform(0, wait / 2) if self.jitter else wait
