"""Lua scripts of the channel layer. Each lists every key it touches in KEYS (one slot)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Script:
    """A Lua script with its SHA1, run with EVALSHA (loaded again on NOSCRIPT).

    ``calls``: the commands it runs, which the Redis user's ACL must allow as well.
    """

    name: str
    source: str
    sha: str = field(init=False)
    calls: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sha", hashlib.sha1(self.source.encode()).hexdigest())
        called = re.findall(r"redis\.call\('(\w+)'", self.source)
        object.__setattr__(self, "calls", tuple(dict.fromkeys(called)))


# Push up to the LIST's remaining room and return how many were pushed.
# KEYS[1] = the channel LIST
# ARGV[1] = capacity, ARGV[2] = expiry in ms, ARGV[3] = now in ms, ARGV[4..] = elements.
# When the LIST looks full, expired elements at its head (nobody read them) are dropped
# first, so that a channel nobody reads does not stay full of dead messages.
SEND = Script(
    "send",
    """
local key = KEYS[1]
local capacity = tonumber(ARGV[1])
local wanted = #ARGV - 3
local length = redis.call('LLEN', key)
if capacity - length < wanted and length > 0 then
    local now = tonumber(ARGV[3])
    while length > 0 do
        local head = redis.call('LINDEX', key, 0)
        local bar = string.find(head, '|', 1, true)
        if not bar or tonumber(string.sub(head, 1, bar - 1)) > now then break end
        redis.call('LPOP', key)
        length = length - 1
    end
end
local n = capacity - length
if n > wanted then n = wanted end
if n <= 0 then return 0 end
redis.call('RPUSH', key, unpack(ARGV, 4, n + 3))
redis.call('PEXPIRE', key, ARGV[2])
return n
""",
)

# Add a member to a group and refresh the group's expiry.
# KEYS[1] = the group ZSET; ARGV[1] = score (time added), ARGV[2] = member, ARGV[3] = expiry s.
GROUP_ADD = Script(
    "group_add",
    """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
""",
)

# Drop members older than group_expiry and return the others joined by ',' (channel names
# cannot contain one): one bulk string parses much faster than an array of 1,000.
# KEYS[1] = the group ZSET; ARGV[1] = oldest score kept.
GROUP_MEMBERS = Script(
    "group_members",
    """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return table.concat(redis.call('ZRANGE', KEYS[1], 0, -1), ',')
""",
)

ALL = (SEND, GROUP_ADD, GROUP_MEMBERS)
BY_SHA = {script.sha: script for script in ALL}

# Largest number of elements pushed by one EVALSHA (Lua's unpack has a stack limit).
MAX_ELEMENTS_PER_CALL = 1000
