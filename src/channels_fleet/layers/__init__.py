"""The channel layer of channels-fleet, and the one Redis seam the rest of the package uses:
what a server is (``topology``), its redis-py clients (``clients``), the retry policy
(``backoff``)."""

from .core import RedisClusterChannelLayer

__all__ = ["RedisClusterChannelLayer"]
