"""The client's address and scheme from a trusted proxy's headers.

Behind an ingress every connection arrives from the proxy, over plain HTTP: the app would see
the proxy's address in ``scope["client"]`` (Django's ``REMOTE_ADDR``) and ``http`` / ``ws`` in
``scope["scheme"]``. When the TCP peer is a trusted proxy, ``X-Forwarded-For`` and
``X-Forwarded-Proto`` replace them, and ``X-Forwarded-Port`` the client's port, as Daphne's
``--proxy-headers`` reads them (``["10.1.2.3", 80]``; 0 without the header) but from trusted
proxies only, as uvicorn's ``--forwarded-allow-ips`` (Daphne trusts any peer). The proxies
are ``CHANNELS_FLEET_FORWARDED_ALLOW_IPS``; headers from any other peer are ignored: a client
cannot claim another address.

    proxies = TrustedProxies(["10.0.0.0/8"])
    scope = proxies.resolve(scope)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_FOR, _PROTO, _PORT = b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-port"
_SCHEMES = {
    "http": {"http": "http", "https": "https", "ws": "http", "wss": "https"},
    "websocket": {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"},
}


def _address(text: str) -> IPAddress | None:
    """An address as peers and hops spell it: ``10.0.0.1``, ``10.0.0.1:4711``,
    ``[2001:db8::1]:80``; an IPv4-mapped IPv6 one (a dual-stack bind) as its IPv4 self."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None  # a unix socket path, a name, "unknown": not an address
    return getattr(address, "ipv4_mapped", None) or address


class TrustedProxies:
    """Peers whose forwarding headers are believed: addresses, networks, or ``*`` (any peer).

    ``*`` trusts the TCP peer only, not the hops it forwards: the client is then the hop that
    peer added itself (the last), never one the client could have written.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any_peer = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def __bool__(self) -> bool:
        return self.any_peer or bool(self.networks)

    def _listed(self, address: IPAddress | None) -> bool:
        return address is not None and any(address in network for network in self.networks)

    def resolve(self, scope: dict[str, Any]) -> dict[str, Any]:
        """The scope as the client sent it, when its peer is a trusted proxy; else unchanged."""
        client = scope.get("client")
        if not self or not client:
            return scope
        if not (self.any_peer or self._listed(_address(str(client[0])))):
            return scope
        # Repeated headers are one comma-separated list, in order (RFC 9110 5.3).
        forwarded: dict[bytes, list[str]] = {_FOR: [], _PROTO: [], _PORT: []}
        for name, value in scope.get("headers", ()):
            if name in forwarded:
                forwarded[name].append(value.decode("latin-1"))
        changes: dict[str, Any] = {}
        proto = ",".join(forwarded[_PROTO]).split(",")[-1].strip().lower()
        scheme = _SCHEMES.get(scope["type"], {}).get(proto)
        if scheme:
            changes["scheme"] = scheme
        # The client is the nearest hop that no listed proxy added: anything past it could
        # have been written by anyone, the client included.
        nearest = None
        for hop in reversed(",".join(forwarded[_FOR]).split(",")):
            address = _address(hop)
            if address is None:
                break
            nearest = address
            if not self._listed(address):
                break
        if nearest is not None:
            changes["client"] = [str(nearest), _port(forwarded[_PORT])]
        return {**scope, **changes} if changes else scope


def _port(values: list[str]) -> int:
    """The client's port from ``X-Forwarded-Port`` (the nearest proxy's entry), else 0."""
    last = ",".join(values).split(",")[-1].strip()
    return int(last) if last.isascii() and last.isdigit() and int(last) < 65536 else 0
