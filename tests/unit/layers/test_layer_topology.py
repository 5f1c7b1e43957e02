"""Reading what a Redis server is (HELLO) and its cluster's nodes (CLUSTER NODES)."""

from __future__ import annotations

from channels_fleet.layers.topology import parse_cluster_nodes, parse_hello

NODES = (
    "a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
    "b2 127.0.0.1:7001@17001,host-b master,fail - 0 0 2 connected 5461-10922 [93->-c3]\n"
    "c3 127.0.0.1:7002@17002 slave a1 0 0 1 connected\n"
    "d4 :0@0 master,noaddr - 0 0 0 disconnected\n"
)


def test_parse_hello__resp2_list_and_resp3_map() -> None:
    resp2 = [b"server", b"redis", b"version", b"7.2.4", b"proto", 2, b"id", 3,
             b"mode", b"cluster", b"role", b"master", b"modules", []]
    server = parse_hello(resp2)
    assert server.cluster and server.version == "7.2.4" and server.version_tuple == (7, 2)
    single = parse_hello({"server": "redis", "version": "6.2.1", "mode": "standalone"})
    assert not single.cluster and single.version_tuple == (6, 2)


def test_parse_cluster_nodes__roles_failures_slots_and_links() -> None:
    nodes = parse_cluster_nodes(NODES.encode())
    assert [n.address for n in nodes if n.addressable] == [
        "127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    first, failing, replica, noaddr = nodes
    assert first.primary and first.myself and first.slots == ((0, 5460),) and not first.failed
    assert first.serves(5460) and not first.serves(5461)
    assert failing.failed and not failing.settled and failing.slots == ((5461, 10922),)
    assert not replica.primary and replica.settled and replica.connected
    assert not noaddr.addressable and not noaddr.settled and not noaddr.connected
    assert noaddr.flags == ("master", "noaddr")


def test_parse_cluster_nodes__by_hostname_where_announced() -> None:
    """Over TLS a node is reached by the host name it announces: its certificate names that."""
    nodes = parse_cluster_nodes(NODES, by_hostname=True)
    assert [n.address for n in nodes if n.addressable] == [
        "127.0.0.1:7000", "host-b:7001", "127.0.0.1:7002"]
