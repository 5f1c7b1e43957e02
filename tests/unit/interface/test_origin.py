"""The interface's origin check, done before anything is relayed."""

from __future__ import annotations

import pytest

from channels_fleet.interface.limits import origin_allowed


def scope(origin: str | None, host: str = "chat.example.com") -> dict:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"headers": headers}


@pytest.mark.parametrize(("origin", "allowed", "ok"), [
    (None, (), True),  # non-browser clients send no Origin
    ("https://chat.example.com", (), True),  # default: same host
    ("https://evil.example", (), False),
    ("https://evil.example", ("*",), True),
    ("https://chat.example.com", ("https://chat.example.com",), True),
    ("http://chat.example.com", ("https://chat.example.com",), False),
    ("https://a.example.com", (".example.com",), True),
    ("https://example.com", (".example.com",), True),
    ("https://example.com.evil.net", (".example.com",), False),
    ("https://chat.example.com:8443", ("chat.example.com",), True),
    ("null", (), False),
])
def test_origin_allowed(origin: str | None, allowed: tuple[str, ...], ok: bool) -> None:
    assert origin_allowed(scope(origin), allowed) is ok


def test_same_host__any_port_as_channels_allowed_hosts_validator() -> None:
    # The page comes from the web tier (8000), the socket goes to an interface (8001).
    assert origin_allowed(scope("http://localhost:8000", "localhost:8001"), ())
    assert origin_allowed(scope("http://LOCALHOST", "localhost:8001"), ())
    assert not origin_allowed(scope("http://localhost.evil:8001", "localhost:8001"), ())
    assert not origin_allowed(scope("http://127.0.0.1:8001", "localhost:8001"), ())
    assert not origin_allowed(scope("http://localhost:8001", ""), ())  # no Host: refuse
