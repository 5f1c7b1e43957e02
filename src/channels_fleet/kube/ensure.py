"""Create each Secret when absent and add the keys it lacks; never change a value that exists.

Concurrent runs (two Jobs, a user editing the Secret) are safe: a create that finds the Secret made
meanwhile, or a patch whose resourceVersion is stale (409 Conflict), reads the Secret again and
starts over, so a value someone else wrote first is kept.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from channels_fleet.exceptions import KubeApiError

from .client import ApiClient
from .kinds import KINDS, Item

log = logging.getLogger(__name__)

CONFLICT_ATTEMPTS = 5
FORBIDDEN, NOT_FOUND, CONFLICT = 403, 404, 409


@dataclass(frozen=True)
class Outcome:
    """What ensure did to one Secret: the keys it added and the keys it kept."""

    secret: str
    created: bool
    added: tuple[str, ...]
    kept: tuple[str, ...]

    def __str__(self) -> str:
        if self.created:
            return f"secret {self.secret}: created with {', '.join(self.added)}"
        if self.added:
            return (f"secret {self.secret}: added {', '.join(self.added)}"
                    f" (kept {', '.join(self.kept) or 'nothing'})")
        return f"secret {self.secret}: has {', '.join(self.kept)}, unchanged"


def ensure_all(client: ApiClient, namespace: str, items: Iterable[Item],
               labels: Mapping[str, str] | None = None, wait_for_access: float = 0,
               sleep: Callable[[float], None] = time.sleep) -> list[Outcome]:
    """Ensure every item's Secret, one Secret at a time, in the order first named.

    `wait_for_access` seconds: 403 Forbidden is retried that long, for the Role and RoleBinding
    applied beside the Job (`kubectl apply` creates them all at once) to take effect."""
    by_secret: dict[str, list[Item]] = {}
    for item in items:
        if item.kind not in KINDS:
            raise ValueError(f"secret {item.secret} key {item.key}: unknown kind {item.kind!r} "
                             f"(known: {', '.join(sorted(KINDS))})")
        by_secret.setdefault(item.secret, []).append(item)
    deadline = time.monotonic() + wait_for_access
    outcomes = []
    for name, wanted in by_secret.items():
        while True:
            try:
                outcomes.append(ensure_secret(client, namespace, name, wanted, labels or {}))
                break
            except KubeApiError as exc:
                if exc.status != FORBIDDEN or time.monotonic() >= deadline:
                    raise
                log.info("%s; retrying while the Role takes effect", exc)
                sleep(1)
    return outcomes


def ensure_secret(client: ApiClient, namespace: str, name: str, items: list[Item],
                  labels: Mapping[str, str]) -> Outcome:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    for _ in range(CONFLICT_ATTEMPTS):
        try:
            secret = client.request("GET", f"{path}/{name}").body
        except KubeApiError as exc:
            if exc.status != NOT_FOUND:
                raise
            data = made(name, items, {})
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                    "data": encode(data)}
            try:
                client.request("POST", path, body)
            except KubeApiError as create_failed:
                if create_failed.status == CONFLICT:
                    continue  # made meanwhile: read it and add to it
                raise
            return Outcome(name, True, tuple(data), ())
        current = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data = made(name, items, current)
        if not data:
            return Outcome(name, False, (), tuple(current))
        if secret.get("immutable"):
            raise KubeApiError(f"secret {name} is immutable and lacks {', '.join(data)}: delete "
                               f"it or add the key(s) yourself")
        # A stale resourceVersion makes the server answer 409: nobody's value is overwritten.
        patch = {"metadata": {"resourceVersion": secret["metadata"]["resourceVersion"]},
                 "data": encode(data)}
        try:
            client.request("PATCH", f"{path}/{name}", patch,
                           content_type="application/merge-patch+json")
        except KubeApiError as exc:
            if exc.status == CONFLICT:
                continue
            raise
        return Outcome(name, False, tuple(data), tuple(current))
    raise KubeApiError(f"secret {name}: changed by someone else on each of "
                       f"{CONFLICT_ATTEMPTS} attempts", status=CONFLICT)


def made(secret: str, items: list[Item], current: Mapping[str, bytes]) -> dict[str, bytes]:
    """The keys the items' kinds add to `current`; refuses one that would change a value."""
    data: dict[str, bytes] = {}
    for item in items:
        for key, value in KINDS[item.kind](item, {**current, **data}).items():
            if key in current or key in data:
                raise ValueError(f"secret {secret}: kind {item.kind!r} would change key {key}, "
                                 f"which exists; existing values are never changed")
            data[key] = value
    return data


def encode(data: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in data.items()}
