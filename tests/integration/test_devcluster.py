import socket
import subprocess
import sys
from pathlib import Path

from channels_fleet.dev.cluster import LocalRedis
from channels_fleet.dev.ports import free_ports


def test_free_ports__never_the_default_redis_port_and_bus_free():
    ports = free_ports(6, with_bus=True)
    assert len(set(ports)) == 6
    assert 6379 not in ports
    # Outside the kernel's source ports: no outgoing connection (or its TIME_WAIT) can hold one.
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert max(ports) + 10000 < first_ephemeral
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port + 10000))


def test_free_ports__a_port_is_not_handed_out_twice_before_it_is_bound():
    # Picked for processes that bind them later: 500 picks of 1 from 10,000 ports would all
    # but surely (1 - 4e-6) repeat one if the picks did not remember each other.
    picks = [free_ports(1)[0] for _ in range(500)]
    assert len(set(picks)) == len(picks)


def test_free_ports__another_process_never_gets_a_port_picked_here():
    # `channels-fleet dev` picks its private ports while the test that picked its --port starts
    # it: 200 picks there and 300 here from 10,000 ports would all but surely share one.
    here = set(free_ports(300))
    there = subprocess.run(
        [sys.executable, "-c",
         "from channels_fleet.dev.ports import free_ports; print(*free_ports(200))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert len(there) == 200
    assert here.isdisjoint(int(port) for port in there)


def test_cluster_fixture__three_masters_each_with_a_replica(redis_cluster: LocalRedis):
    assert len(redis_cluster.nodes) == 6
    assert len(redis_cluster.masters_now()) == 3


def test_single_fixture__answers_ping(redis_single: LocalRedis):
    with socket.create_connection(("127.0.0.1", redis_single.nodes[0].port)) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(16) == b"+PONG\r\n"
