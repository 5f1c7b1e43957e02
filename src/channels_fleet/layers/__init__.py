"""Channel layers of channels-fleet."""

from .core import RedisClusterChannelLayer

__all__ = ["RedisClusterChannelLayer"]
