"""How every fleet process reaches its Redis: a user, a password and a CA beside the URLs.

``CHANNELS_FLEET_REDIS_USERNAME`` and ``CHANNELS_FLEET_REDIS_PASSWORD`` override the user info
of ``CHANNELS_FLEET_REDIS_URL`` (a managed service's password needs no URL escaping, and a URL
composed as ``redis://:$(PASSWORD)@host`` keeps working whatever the password holds);
``CHANNELS_FLEET_REDIS_CA_FILE`` is the PEM bundle every ``rediss://`` connection verifies the
server against, host name checked. They are applied to the URLs once, in the settings
(:class:`channels_fleet.settings.RedisSettings`), so every client made from those URLs (the
layer, redis-py's clients) connects the same way:

    RedisAccess(username="fleet-worker", password="p@ss").apply("rediss://redis:6379")
    # 'rediss://fleet-worker:p%40ss@redis:6379?ssl_ca_certs=...' (with a ca_file)

The project's ``CHANNEL_LAYERS`` hosts at the same host and port as one of the fleet's URLs get
the same user, password and CA (:meth:`RedisAccess.apply_to_host`); hosts elsewhere are left as
written.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

#: The connection option (and URL query argument) redis-py and the layer read the CA from.
CA_OPTION = "ssl_ca_certs"
_AUTHORITY_END = re.compile(r"[/?#]")


@dataclass(frozen=True)
class RedisAccess:
    """A user, password and CA that replace those of a Redis URL; empty: the URL's own."""

    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""

    def __bool__(self) -> bool:
        return bool(self.username or self.password or self.ca_file)

    def apply(self, url: str) -> str:
        """``url`` with this user, password (each only when set) and, for rediss://, CA."""
        if not self or not url.startswith(("redis://", "rediss://")):
            return url
        scheme, rest = url.split("://", 1)
        user, password, rest = _split_userinfo(rest, self.password)
        user = self.username or user
        password = self.password or password
        parts = urlsplit(f"{scheme}://{rest}")
        userinfo = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
        netloc = f"{userinfo}@{parts.netloc}" if userinfo else parts.netloc
        query = parts.query
        if self.ca_file and scheme == "rediss":
            pairs = [(k, v) for k, v in parse_qsl(query) if k != CA_OPTION]
            query = urlencode([*pairs, (CA_OPTION, self.ca_file)])
        return urlunsplit(parts._replace(netloc=netloc, query=query))

    def apply_to_host(self, entry: object, fleet_urls: Sequence[str]) -> object:
        """A ``CHANNEL_LAYERS`` hosts entry (URL or ``{"address": url, ...}``) with this
        access if it is at one of ``fleet_urls``' host and port; anything else as it is."""
        if isinstance(entry, str):
            return self.apply(entry) if same_server(entry, fleet_urls) else entry
        if isinstance(entry, dict) and isinstance(entry.get("address"), str):
            if same_server(entry["address"], fleet_urls):
                # The entry's own options would win over its URL's (layers/hosts.py).
                replaced = {"username": self.username, "password": self.password,
                            CA_OPTION: self.ca_file}
                kept = {k: v for k, v in entry.items() if not replaced.get(k)}
                return {**kept, "address": self.apply(entry["address"])}
        return entry


def _split_userinfo(rest: str, password: str) -> tuple[str, str, str]:
    """``(user, password, the rest)`` of a URL after its ``scheme://``. A password given
    (the one that overrides) may sit in the URL unescaped, as a chart composes it: taken as
    it is, whatever it holds ('@', '/', ':')."""
    if password:
        head, found, tail = rest.partition(f":{password}@")
        if found and "/" not in head and "@" not in head:
            return unquote(head), password, tail
    end = _AUTHORITY_END.search(rest)
    authority, tail = (rest[:end.start()], rest[end.start():]) if end else (rest, "")
    userinfo, at, hostport = authority.rpartition("@")
    if not at:
        return "", "", rest
    user, _, old = userinfo.partition(":")
    tail = hostport + tail
    return unquote(user), unquote(old), tail


def server_of(url: str) -> tuple[str, int]:
    """``(host, port)`` of a redis:// URL, lower-cased host, 6379 when unsaid."""
    parts = urlsplit(url)
    return (parts.hostname or "localhost").lower(), parts.port or 6379


def same_server(url: str, fleet_urls: Sequence[str]) -> bool:
    """Whether ``url`` names the host and port of one of ``fleet_urls``."""
    if not url.startswith(("redis://", "rediss://")):
        return False
    try:
        return server_of(url) in {server_of(u) for u in fleet_urls}
    except ValueError:  # a port that is not a number: not ours to judge
        return False


def display(url: str) -> str:
    """``url`` as error lines name it: scheme, user, host and port; no password, no query."""
    try:
        parts = urlsplit(url)
        host, port = server_of(url)
    except ValueError:
        return url.split("://", 1)[0] + "://(unparsable URL)"
    user = f"{unquote(parts.username)}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}:{port}"


def at_address(url: str, address: str) -> str:
    """``url`` pointed at another node, ``host:port``, keeping its user, password and query."""
    parts = urlsplit(url)
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{address}"))
