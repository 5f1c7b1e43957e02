"""Redis key names and the LIST element format of the channel layer.

Every key carries a hash tag (``{...}``) so that each command, script and pipeline call
touches exactly one Redis Cluster slot:

- ``<prefix>:q:{<channel>}``: LIST of messages of a normal channel;
- ``<prefix>:q:{<a.b!>}``: LIST shared by all process-local channels ``a.b!*``;
- ``<prefix>:g:{<group>}``: ZSET of a group (member = channel name, score = time added).

A LIST element is ``b"<expires_at_ms>|<channels>|" + body`` where ``<channels>`` is one
channel name, or for a group_send to several process-local channels of one LIST, their
names joined by ``,``. Channel names cannot contain ``|`` or ``,``, so ``split(b"|", 2)``
parses it back.
"""

from __future__ import annotations

from redis.crc import key_slot

SEPARATOR = b"|"

#: How every homed channel name starts (``specific.fleet<interface token>!<connection>``,
#: interface/inbox.py): a layer's own process-local names are ``specific.<hex>!``.
HOMED_PREFIX = "specific.fleet"
#: A homed LIST is its interface's inbox, shared by every session homed there (thousands).
#: Between that interface's death and its adoption by a worker (a heartbeat TTL and more:
#: worker/adopter.py) nobody pops it, and what all those sessions get meanwhile must fit:
#: it holds this many times a channel's capacity. The expiry still bounds it in time.
HOMED_SHARE = 100


def non_local_name(channel: str) -> str:
    """``a.b!c`` -> ``a.b!``; a normal channel name is returned unchanged."""
    bang = channel.find("!")
    return channel if bang < 0 else channel[: bang + 1]


def is_process_local(channel: str) -> bool:
    return "!" in channel


def is_homed(channel: str) -> bool:
    """A consumer channel homed on an interface (layers/homing.py)."""
    return channel.startswith(HOMED_PREFIX)


def channel_key(prefix: str, channel: str) -> str:
    """The LIST holding messages for ``channel`` (process-local channels share their prefix's)."""
    return f"{prefix}:q:{{{non_local_name(channel)}}}"


def group_key(prefix: str, group: str) -> str:
    """The ZSET holding the members of ``group``."""
    return f"{prefix}:g:{{{group}}}"


def slot_of(key: str | bytes) -> int:
    """The Redis Cluster hash slot of ``key`` (honours hash tags)."""
    return key_slot(key.encode() if isinstance(key, str) else key)


def pack_element(expires_at_ms: int, channels: str | list[str], body: bytes) -> bytes:
    """Build the LIST element for one message to ``channels`` (one name, or several)."""
    names = channels if isinstance(channels, str) else ",".join(channels)
    return b"%d|%s|%s" % (expires_at_ms, names.encode("ascii"), body)


def unpack_element(element: bytes) -> tuple[int, list[str], bytes]:
    """Split a LIST element into (expires_at_ms, [channel, ...], body)."""
    expires, channels, body = element.split(SEPARATOR, 2)
    return int(expires), channels.decode("ascii").split(","), body
