"""Declaring a process dead, atomically, and finding out that one was declared dead.

A heartbeat can also expire because Redis itself was away (a master failing over takes longer
than the TTL): that must not read as every process dying. So a peer is declared dead only by
:data:`DECLARE`, which finds its heartbeat still missing and leaves a tombstone; and a process
whose key expired abandons its connections only if :data:`REVIVE` finds that tombstone. Both
scripts touch one slot (``{hb}``: ``wire.heartbeat_key`` and ``wire.tombstone_key``), so a
re-registration and a declaration are ordered.
"""

from __future__ import annotations

#: Tombstones are set by the peer that declares a process dead, and kept this long.
TOMBSTONE_MS = 24 * 3600 * 1000

#: KEYS: heartbeat, tombstone; ARGV: the tombstone's TTL (ms). 1 if it declared the process dead.
DECLARE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
  return 1
end
return 0
"""
#: KEYS: heartbeat, tombstone; ARGV: the heartbeat's value, its TTL (ms). 1 if the process had
#: been declared dead (the tombstone is consumed).
REVIVE = """
local dead = redis.call('DEL', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return dead
"""
