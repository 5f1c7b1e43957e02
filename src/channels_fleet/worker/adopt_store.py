"""The Redis side of adopting a dead home (adopter.py): its keys, the lock's scripts, replies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: KEYS: the lock; ARGV: the holder, the TTL (ms). 1 if still held (and refreshed).
REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
#: KEYS: the lock; ARGV: the holder. Lets go only of one's own.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def home_key(home: str, prefix: str) -> str:
    """The hash of the sessions homed on dead interface ``home``: ``fleet:home:{fleet.i!a}``."""
    return f"{prefix}:home:{{{home}}}"


def adopt_key(home: str, prefix: str) -> str:
    """The lock of the worker adopting ``home``'s LIST: ``fleet:adopt:{fleet.i!a}``."""
    return f"{prefix}:adopt:{{{home}}}"


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(raw: Any) -> Iterable[tuple[Any, Any]]:
    """A flat [field, value, ...] reply as pairs."""
    items = list(raw or ())
    return zip(items[0::2], items[1::2], strict=True)
