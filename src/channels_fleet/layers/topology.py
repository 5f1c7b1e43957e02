"""What a Redis server is: a single server or a Cluster node, its version, its cluster's nodes.

The one place that reads topology replies, whatever client asked (the layer's RESP client,
redis-py sync or async): ``HELLO`` (no arguments: it answers without switching protocol) for
the mode and version, ``CLUSTER NODES`` for the nodes, their roles and slots. ``HELLO`` is in
the ``@connection`` ACL category, where ``INFO`` is ``@dangerous``: managed Redis services often
refuse the latter.

    server = parse_hello(client.execute_command("HELLO"))
    if server.cluster:
        nodes = parse_cluster_nodes(client.execute_command("CLUSTER", "NODES"))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SLOTS = 16384
#: ``HELLO`` without a protocol version: the server's properties, in the connection's protocol.
HELLO = ("HELLO",)
#: Flags of a node that cannot answer for the cluster yet (or any more).
UNSETTLED = frozenset({"fail", "fail?", "handshake", "noaddr"})


@dataclass(frozen=True)
class Server:
    """One server's answer to ``HELLO``."""

    version: str
    cluster: bool

    @property
    def version_tuple(self) -> tuple[int, ...]:
        """``(major, minor)`` of ``version``: ``"7.2.4"`` -> ``(7, 2)``."""
        return tuple(int(p) for p in self.version.split(".")[:2] if p.isdigit())


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def parse_hello(reply: Mapping[Any, Any] | Sequence[Any]) -> Server:
    """The server ``reply`` (a RESP2 flat list of names and values, or a RESP3 map) describes."""
    pairs = reply.items() if isinstance(reply, Mapping) else zip(reply[::2], reply[1::2],
                                                                     strict=True)
    properties = {_text(name): value for name, value in pairs}
    return Server(version=_text(properties.get("version", "0")),
                  cluster=_text(properties.get("mode", "")) == "cluster")


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``."""

    address: str  # ip:port, or hostname:port (parse_cluster_nodes' by_hostname)
    flags: tuple[str, ...]  # as the node lists them: ("myself", "master")
    connected: bool  # the link from the node asked to this one
    slots: tuple[tuple[int, int], ...] = field(default=())

    @property
    def primary(self) -> bool:
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged failing (``fail``) or suspected (``fail?``) by the cluster itself."""
        return "fail" in self.flags or "fail?" in self.flags

    @property
    def myself(self) -> bool:
        """The node that was asked."""
        return "myself" in self.flags

    @property
    def settled(self) -> bool:
        """Whether it answers for the cluster: not failing, in handshake, or without address."""
        return UNSETTLED.isdisjoint(self.flags)

    @property
    def addressable(self) -> bool:
        host, _, port = self.address.rpartition(":")
        unusable = "noaddr" in self.flags or "handshake" in self.flags
        return bool(host) and port not in ("", "0") and not unusable

    def serves(self, slot: int) -> bool:
        return any(start <= slot <= end for start, end in self.slots)


def parse_cluster_nodes(reply: bytes | str, by_hostname: bool = False) -> list[ClusterNode]:
    """Every node of a ``CLUSTER NODES`` reply, in its order. ``by_hostname``: a node that
    announces a host name (``ip:port@bus,hostname``) is addressed by it; over TLS it must be, as
    a certificate names hosts, not the pods' IPs."""
    nodes = []
    for line in _text(reply).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots = []
        for spec in parts[8:]:
            if spec.startswith("["):  # a slot being migrated: "[slot->-node]"
                continue
            start, _, end = spec.partition("-")
            slots.append((int(start), int(end or start)))
        address, _, bus = parts[1].partition("@")
        hostname = bus.partition(",")[2]
        if by_hostname and hostname:
            address = f"{hostname}:{address.rpartition(':')[2]}"
        nodes.append(ClusterNode(
            address=address,
            flags=tuple(parts[2].split(",")),
            connected=parts[7] == "connected",
            slots=tuple(slots),
        ))
    return nodes
