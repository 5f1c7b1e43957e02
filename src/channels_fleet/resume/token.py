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
        return raw.hex(), self._token(raw)

    def verify(self, token: str) -> str | None:
        """The session id ``token`` was issued for, or None if this key did not issue it.

        Compared whole with the token this key makes for its id, not by its decoded MAC: the
        last of 43 characters carries 2 bits base64 ignores, so 4 spellings decode alike, and
        a token changed there must not pass as the one issued."""
        if len(token) != _TOKEN_CHARS or not token.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))[:ID_BYTES]
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(token.encode("ascii"), self._token(raw).encode("ascii")):
            return None
        return raw.hex()

    def _token(self, raw: bytes) -> str:
        mac = hmac.new(self._key, raw, hashlib.sha256).digest()[:MAC_BYTES]
        return base64.urlsafe_b64encode(raw + mac).rstrip(b"=").decode("ascii")


_TOKEN_CHARS = len(base64.urlsafe_b64encode(bytes(ID_BYTES + MAC_BYTES)).rstrip(b"="))
