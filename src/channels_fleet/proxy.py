"""The client's address and scheme from a trusted proxy's headers.

Behind an ingress every connection arrives from the proxy, over plain HTTP: the app would see
the proxy's address in ``scope["client"]`` (Django's ``REMOTE_ADDR``) and ``http`` / ``ws`` in
``scope["scheme"]``. When the TCP peer is a trusted proxy, ``X-Forwarded-For`` and
``X-Forwarded-Proto`` replace them, as uvicorn's ``--forwarded-allow-ips`` does (and Daphne's
``--proxy-headers``, which trusts any peer). The proxies are ``CHANNELS_FLEET_FORWARDED_ALLOW_IPS``;
headers from any other peer are ignored: a client cannot claim another address.

    proxies = TrustedProxies(["10.0.0.0/8"])
    scope = proxies.resolve(scope)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

_FOR, _PROTO = b"x-forwarded-for", b"x-forwarded-proto"
_SCHEMES = {
    "http": {"http": "http", "https": "https", "ws": "http", "wss": "https"},
    "websocket": {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"},
}


class TrustedProxies:
    """Peers whose forwarding headers are believed: addresses, networks, or ``*`` (any)."""

    def __init__(self, entries: Iterable[str]) -> None:
        entries = tuple(entries)
        self.any = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def __bool__(self) -> bool:
        return self.any or bool(self.networks)

    def trusts(self, host: str) -> bool:
        if self.any:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False  # a unix socket path or a name: not an address we were told of
        return any(address in network for network in self.networks)

    def resolve(self, scope: dict[str, Any]) -> dict[str, Any]:
        """The scope as the client sent it, when its peer is a trusted proxy; else unchanged."""
        client = scope.get("client")
        if not self or not client or not self.trusts(str(client[0])):
            return scope
        # Repeated headers are one comma-separated list, in order (RFC 9110 5.3).
        forwarded: dict[bytes, list[str]] = {_FOR: [], _PROTO: []}
        for name, value in scope.get("headers", ()):
            if name in forwarded:
                forwarded[name].append(value.decode("latin-1"))
        changes: dict[str, Any] = {}
        proto = ",".join(forwarded[_PROTO]).split(",")[-1].strip().lower()
        scheme = _SCHEMES.get(scope["type"], {}).get(proto)
        if scheme:
            changes["scheme"] = scheme
        hops = [h.strip() for h in ",".join(forwarded[_FOR]).split(",") if h.strip()]
        if hops:
            # The nearest hop our proxies did not add is the client; past it anyone could
            # have written the header.
            for host in reversed(hops):
                if not self.trusts(host):
                    break
            changes["client"] = [host, 0]
        return {**scope, **changes} if changes else scope
