"""``channels-fleet secrets ensure``: the chart's secrets Job.

    channels-fleet secrets ensure --label app.kubernetes.io/instance=fleet \\
        '{"secret": "fleet-channels-fleet-redis-auth", "key": "redis-password", "kind": "password"}'

Each ITEM is a JSON object {secret, key, kind[, options]}. Prints one line per Secret (its key
names, never a value); exits 1 with one line naming the cause when the API server refuses.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from channels_fleet.exceptions import KubeApiError

from .client import SERVICE_ACCOUNT, ApiClient
from .ensure import ensure_all
from .kinds import Item


def parse_item(text: str) -> Item:
    try:
        raw = json.loads(text)
        return Item(secret=raw["secret"], key=raw["key"], kind=raw["kind"],
                    options=raw.get("options") or {})
    except (ValueError, KeyError, TypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a JSON object with secret, key, kind (and options): {exc}"
        ) from exc


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected KEY=VALUE")
    return key, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="channels-fleet secrets", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    ensure = sub.add_parser("ensure", help="create missing Secrets and keys, keep every value")
    ensure.add_argument("items", nargs="+", type=parse_item, metavar="ITEM")
    ensure.add_argument("--namespace", help="default: the pod's own (service account)")
    ensure.add_argument("--label", action="append", type=parse_label, default=[],
                        help="KEY=VALUE label of a Secret this creates (repeatable)")
    ensure.add_argument("--wait-for-access", type=float, default=60, metavar="SECONDS",
                        help="retry 403 Forbidden this long (RBAC applied beside the Job)")
    ensure.add_argument("--server", help="API server URL without credentials, e.g. `kubectl "
                        "proxy`'s http://127.0.0.1:8001 (default: the pod's cluster)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        client = ApiClient(args.server) if args.server else ApiClient.in_cluster()
        namespace = args.namespace or (SERVICE_ACCOUNT / "namespace").read_text().strip()
        outcomes = ensure_all(client, namespace, args.items, dict(args.label),
                              wait_for_access=args.wait_for_access)
    except (KubeApiError, ValueError, OSError) as exc:
        print(f"channels-fleet secrets ensure: {exc}", file=sys.stderr)
        return 1
    for outcome in outcomes:
        print(outcome)
    return 0
