"""How the fleet's redis-py cluster clients (heartbeats, peer watch, fleet status) are seeded,
on a real Redis Cluster: by a name, the name stays their only seed, so a slot-map refresh asks
whatever the name resolves to now (a Kubernetes Service's ready pods), never only addresses
that may all be gone after a rolled StatefulSet; by an address, they follow the nodes found."""

from __future__ import annotations

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.layers.clients import redis_client, sync_client

# The loopback node by a name. redis-py writes `localhost` itself as 127.0.0.1, so the seed it
# keeps reads as that address: one seed, where a client seeded by an address ends with every
# node it found.
NAME, KEPT = "localhost", "127.0.0.1"


def seeds(client) -> set[str]:
    return set(client.nodes_manager.startup_nodes)


def test_sync_client__seeded_by_a_name_keeps_it(redis_cluster: LocalRedis) -> None:
    by_address = redis_cluster.urls[0]
    port = by_address.rsplit(":", 1)[1]
    by_name = sync_client(f"redis://{NAME}:{port}", cluster=True)
    try:
        by_name.nodes_manager.initialize()  # a refresh, as after a MOVED or a lost node
        assert seeds(by_name) == {f"{KEPT}:{port}"}
        assert by_name.ping(target_nodes=by_name.RANDOM)
    finally:
        by_name.close()
    found = sync_client(by_address, cluster=True)
    try:
        # The nodes it found (masters, and replicas once CLUSTER SLOTS lists them), not the seed.
        assert seeds(found) == {node.name for node in found.get_nodes()}, seeds(found)
        assert len(seeds(found)) >= 3, seeds(found)
    finally:
        found.close()


async def test_async_client__seeded_by_a_name_keeps_it(redis_cluster: LocalRedis) -> None:
    port = redis_cluster.urls[0].rsplit(":", 1)[1]
    client = await redis_client([f"redis://{NAME}:{port}"])
    try:
        await client.initialize()
        await client.nodes_manager.initialize()
        assert seeds(client) == {f"{KEPT}:{port}"}
        assert await client.ping()
    finally:
        await client.aclose()
