"""What a generated value is made of: a registry of kinds by name (see the package docstring)."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .tls import make_tls

# Letters and digits only: URL-safe, so Kubernetes can put a password into a URL ($(VAR)).
PASSWORD_ALPHABET = string.ascii_letters + string.digits
PASSWORD_LENGTH = 32


@dataclass(frozen=True)
class Item:
    """One requested value: key `key` of Secret `secret`, made by kind `kind` with `options`."""

    secret: str
    key: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


Kind = Callable[[Item, Mapping[str, bytes]], dict[str, bytes]]


def password(item: Item, current: Mapping[str, bytes]) -> dict[str, bytes]:
    """A random password of `length` (default 32) letters and digits under `item.key`."""
    if item.key in current:
        return {}
    length = int(item.options.get("length", PASSWORD_LENGTH))
    return {item.key: "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(length)).encode()}


KINDS: dict[str, Kind] = {
    "password": password,
    "tls": make_tls,
}
