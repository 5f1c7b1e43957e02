"""Wait until the channel layer's Redis can be started on: ``python -m channels_fleet.redis_wait``.

The chart's ``wait-for-redis`` init container runs this before an interface or worker starts,
so a fresh install does not crash-loop its pods while the bundled cluster forms. A single Redis
is ready when it answers. A Redis Cluster is ready when every node the first URL's node knows
(not failing, not still in handshake) says ``cluster_state:ok`` with all 16384 slots assigned.
One node's view is not enough: slot ownership spreads by gossip, and an app seeded through a
Service may ask a node that has not heard yet, read an incomplete slot table and exit.

It connects as the service will (``RedisSettings``: the URL with CHANNELS_FLEET_REDIS_USERNAME,
_PASSWORD and _CA_FILE). What waiting cannot mend (a certificate that fails the check, AUTH
refused, a command the user's ACL refuses) ends it at once: one line naming the URL, the command
and the cause, exit status 3.
"""

from __future__ import annotations

import itertools
import sys
import time

from .adopt import redact
from .exceptions import STARTUP_FAILURE, RedisAccessError, RedisPermissionError
from .layers import acl
from .layers.clients import ask_server, node_client, sync_client
from .layers.topology import SLOTS, parse_cluster_nodes
from .redis_access import at_address
from .settings import RedisSettings, SettingsError


def node_verdict(info: dict) -> str | None:
    """Why a node's ``CLUSTER INFO`` says the cluster is not formed from where it stands, or
    None when it is."""
    assigned = int(info["cluster_slots_assigned"])
    if assigned < SLOTS or info["cluster_state"] != "ok":
        # cluster_state is ok on a cluster still forming, with some shards' slots not given
        # yet (cluster-require-full-coverage no): every slot must be assigned too.
        return f"cluster_state is {info['cluster_state']}, {assigned} of {SLOTS} slots assigned"
    return None


def check(url: str, timeout: float = 3.0) -> str | None:
    """Why the Redis at ``url`` is not ready for the layer yet, or None when it is."""
    seed = sync_client(url, cluster=False, timeout=timeout)
    try:
        with acl.naming(url, "HELLO"):
            if not ask_server(seed).cluster:
                return None
        with acl.naming(url, "CLUSTER INFO"):
            why = node_verdict(seed.cluster("info"))
        if why is not None:
            return why
        with acl.naming(url, "CLUSTER NODES"):
            nodes = parse_cluster_nodes(seed.execute_command("CLUSTER", "NODES"),
                                        by_hostname=url.startswith("rediss://"))
        for node in nodes:
            if node.myself:
                continue
            if not node.settled or not node.connected:
                link = "up" if node.connected else "down"
                return f"node {node.address} is {','.join(node.flags)} (link {link})"
            peer = node_client(url, node.address, timeout)
            try:
                with acl.naming(at_address(url, node.address), "CLUSTER INFO"):
                    why = node_verdict(peer.cluster("info"))
            finally:
                peer.close()
            if why is not None:
                return f"node {node.address}: {why}"
        return None
    finally:
        seed.close()


def main(interval: float = 2.0) -> int:
    """Poll the first of ``CHANNELS_FLEET_REDIS_URL``'s URLs until ready; say why every 20 s.
    Exit 3 at once on what waiting cannot mend (settings, certificate, AUTH, the ACL)."""
    try:
        settings = RedisSettings.from_env()
        if not settings.redis_url:
            raise SettingsError("CHANNELS_FLEET_REDIS_URL is not set; expected redis://host:port")
    except SettingsError as exc:
        print(exc, flush=True)
        return STARTUP_FAILURE
    url = settings.redis_url[0]
    for attempt in itertools.count():
        try:
            why = check(url)
        except (RedisAccessError, RedisPermissionError) as exc:
            print(exc, flush=True)
            return STARTUP_FAILURE
        except Exception as exc:  # not up yet: refused, unresolvable, loading, ...
            why = f"{type(exc).__name__}: {exc}"
        if why is None:
            break
        if attempt % 10 == 0:
            print(f"waiting for Redis at {redact(url)}: {why}", flush=True)
        time.sleep(interval)
    print(f"Redis at {redact(url)} is up", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
