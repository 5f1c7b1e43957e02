"""Session tokens: issued and checked with one key; anything else is refused."""

from __future__ import annotations

import string

import pytest

from channels_fleet.resume import envelope
from channels_fleet.resume.token import SessionKey

KEY = b"k" * 32


def test_issued_token__verifies_to_its_session_and_fits_the_protocol() -> None:
    key = SessionKey(KEY)
    session_id, token = key.issue()
    assert key.verify(token) == session_id
    assert envelope.parse_offer(envelope.offer((), token, 3)).session == token


def test_two_sessions__two_ids() -> None:
    key = SessionKey(KEY)
    assert key.issue()[0] != key.issue()[0]


def test_another_keys_token__refused() -> None:
    _, token = SessionKey(b"x" * 32).issue()
    assert SessionKey(KEY).verify(token) is None


def test_one_character_changed__refused() -> None:
    key = SessionKey(KEY)
    _, token = key.issue()
    for i in (0, len(token) // 2, len(token) - 1):
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]
        assert key.verify(changed) is None


@pytest.mark.parametrize("token", ["", "short", "!" * 43, "A" * 42, "A" * 44, "A" * 43])
def test_malformed__refused(token: str) -> None:
    assert SessionKey(KEY).verify(token) is None


def test_short_key__refused_with_its_length() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes, got 8"):
        SessionKey(b"12345678")


BASE64URL = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


def test_last_character_s_ignored_bits_changed__refused() -> None:
    # The 43rd character holds 2 bits that base64 drops: 'A'..'D' decode alike. A token
    # spelled otherwise than issued is refused (found as a 1-in-16 flake of the test above).
    key = SessionKey(KEY)
    for _ in range(64):
        _, token = key.issue()
        last = BASE64URL.index(token[-1])
        assert last % 4 == 0  # the issued spelling: its ignored bits are 0
        for spelling in range(last + 1, last + 4):
            alike = token[:-1] + BASE64URL[spelling]
            assert key.verify(alike) is None
        assert key.verify(token) is not None
