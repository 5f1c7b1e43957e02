"""TrustedProxies: the client's address and scheme from a trusted proxy's headers only."""

from __future__ import annotations

import pytest

from channels_fleet.interface.proxy import TrustedProxies
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError


def scope(peer: str, *headers: tuple[bytes, bytes], kind: str = "http") -> dict:
    base = {"type": kind, "client": [peer, 51234], "headers": list(headers)}
    return base if kind == "websocket" else {**base, "scheme": "http"}


XFF = b"x-forwarded-for"
XFP = b"x-forwarded-proto"


def test_untrusted_peer__headers_ignored() -> None:
    original = scope("192.0.2.1", (XFF, b"203.0.113.9"), (XFP, b"https"))
    assert TrustedProxies(["10.0.0.0/8"]).resolve(original) is original
    assert TrustedProxies([]).resolve(original) is original


def test_trusted_peer__nearest_untrusted_hop_is_the_client() -> None:
    got = TrustedProxies(["10.0.0.0/8"]).resolve(
        scope("10.1.2.3", (XFF, b"198.51.100.7, 203.0.113.9, 10.9.9.9"), (XFP, b"https")))
    assert got["client"] == ["203.0.113.9", 0]
    assert got["scheme"] == "https"


def test_repeated_headers_are_one_list() -> None:
    got = TrustedProxies(["127.0.0.1"]).resolve(
        scope("127.0.0.1", (XFF, b"203.0.113.9"), (XFF, b"198.51.100.7")))
    assert got["client"] == ["198.51.100.7", 0]


def test_every_hop_listed__the_farthest_one() -> None:
    got = TrustedProxies(["10.0.0.0/8"]).resolve(
        scope("10.0.0.1", (XFF, b"10.0.0.5, 10.0.0.6")))
    assert got["client"] == ["10.0.0.5", 0]


def test_any_peer__only_the_hop_it_added_is_believed() -> None:
    """With ``*`` a client's own X-Forwarded-For entry (appended to by the proxy) is no
    disguise: the client is the hop the trusted peer added."""
    got = TrustedProxies(["*"]).resolve(scope("10.0.0.1", (XFF, b"6.6.6.6, 203.0.113.9")))
    assert got["client"] == ["203.0.113.9", 0]


def test_hops_with_ports_and_brackets() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.resolve(scope("10.0.0.1", (XFF, b"203.0.113.9:4711")))["client"] == [
        "203.0.113.9", 0]
    assert proxies.resolve(scope("10.0.0.1", (XFF, b"[2001:db8::7]:80")))["client"] == [
        "2001:db8::7", 0]


def test_dual_stack_peer__ipv4_mapped_address_matches_ipv4_network() -> None:
    got = TrustedProxies(["10.0.0.0/8"]).resolve(scope("::ffff:10.1.2.3", (XFF, b"203.0.113.9")))
    assert got["client"] == ["203.0.113.9", 0]


def test_unparsable_hop__the_nearest_address_before_it() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    got = proxies.resolve(scope("10.0.0.1", (XFF, b"unknown, 10.0.0.7")))
    assert got["client"] == ["10.0.0.7", 0]
    unparsable = scope("10.0.0.1", (XFF, b"unknown"))
    assert proxies.resolve(unparsable) is unparsable  # the peer stays the client


def test_websocket_scheme__https_becomes_wss() -> None:
    got = TrustedProxies(["*"]).resolve(scope("10.0.0.1", (XFP, b"https"), kind="websocket"))
    assert got["scheme"] == "wss"
    assert got["client"] == ["10.0.0.1", 51234]  # no X-Forwarded-For: the peer


def test_unknown_scheme_ignored() -> None:
    assert TrustedProxies(["*"]).resolve(scope("10.0.0.1", (XFP, b"gopher")))["scheme"] == "http"


def test_ipv6_network_and_unix_socket_peer() -> None:
    proxies = TrustedProxies(["fd00::/8"])
    assert proxies.resolve(scope("fd00::1", (XFF, b"2001:db8::7")))["client"] == ["2001:db8::7", 0]
    unix = scope("/run/daphne.sock", (XFF, b"203.0.113.9"))
    assert proxies.resolve(unix) is unix


def test_bad_entry__settings_error_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_FORWARDED_ALLOW_IPS"):
        InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://r:6379",
                                    "CHANNELS_FLEET_FORWARDED_ALLOW_IPS": "10.0.0.0/8,proxy"})


XFPORT = b"x-forwarded-port"


def test_forwarded_port__the_clients_port_as_daphne_reads_it() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    got = proxies.resolve(scope("10.0.0.1", (XFF, b"10.1.2.3"), (XFPORT, b"80")))
    assert got["client"] == ["10.1.2.3", 80]  # Daphne --proxy-headers: ["10.1.2.3", 80]
    got = proxies.resolve(scope("10.0.0.1", (XFF, b"10.1.2.3"), (XFPORT, b"443, 8443")))
    assert got["client"] == ["10.1.2.3", 8443]  # the nearest proxy's entry


def test_forwarded_port__unparsable_is_0_and_alone_changes_nothing() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    got = proxies.resolve(scope("10.0.0.1", (XFF, b"10.1.2.3"), (XFPORT, b"http")))
    assert got["client"] == ["10.1.2.3", 0]
    only_port = scope("10.0.0.1", (XFPORT, b"80"))
    assert proxies.resolve(only_port)["client"] == ["10.0.0.1", 51234]  # as Daphne: XFF first


def test_forwarded_port__from_an_untrusted_peer_ignored() -> None:
    untrusted = scope("192.0.2.1", (XFF, b"10.1.2.3"), (XFPORT, b"80"))
    assert TrustedProxies(["10.0.0.0/8"]).resolve(untrusted) is untrusted
