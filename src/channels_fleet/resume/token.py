"""Session tokens an interface can check without asking anyone: a random id and its MAC.

``base64url(id || HMAC-SHA256(key, id)[:16])``, the id 16 random bytes: 43 characters, within
the protocol's token rule (envelope.py). Every interface of a release holds the same key
(``CHANNELS_FLEET_RESUME_KEY``, a Secret the chart creates once), so any of them can tell a
forged or mangled token from a real one before it reads the session's entry in Redis; the id
names that entry. A token proves the session was issued by this fleet, not that it still lives.

    key = SessionKey(secret)
    session_id, token = key.issue()
    key.verify(token)        # session_id, or None
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

ID_BYTES = 16
MAC_BYTES = 16
#: Shortest key accepted: a MAC is only as strong as its key.
MIN_KEY_BYTES = 32


class SessionKey:
    """Issues and checks the session tokens of one fleet."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"a session key needs at least {MIN_KEY_BYTES} bytes, got "
                             f"{len(key)}")
        self._key = key

    def issue(self) -> tuple[str, str]:
        """A new session: (its id, hex, for the registry; its token, for the client)."""
        raw = secrets.token_bytes(ID_BYTES)
        token = base64.urlsafe_b64encode(raw + self._mac(raw)).rstrip(b"=").decode("ascii")
        return raw.hex(), token

    def verify(self, token: str) -> str | None:
        """The session id ``token`` was issued for, or None if this key did not issue it."""
        if len(token) != _TOKEN_CHARS:
            return None
        try:
            blob = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        raw, mac = blob[:ID_BYTES], blob[ID_BYTES:]
        if len(mac) != MAC_BYTES or not hmac.compare_digest(mac, self._mac(raw)):
            return None
        return raw.hex()

    def _mac(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()[:MAC_BYTES]


_TOKEN_CHARS = len(base64.urlsafe_b64encode(bytes(ID_BYTES + MAC_BYTES)).rstrip(b"="))
