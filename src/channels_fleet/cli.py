"""The ``channels-fleet`` command: one entry point, one subcommand per service."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="channels-fleet", description=__doc__)
    sub = parser.add_subparsers(dest="service", required=True)
    # Each service parses its own flags (and --help) from what is left.
    for name, summary in (
        ("interface", "serve sockets with Daphne and relay them to workers"),
        ("worker", "run a Channels project's ASGI app for relayed connections"),
        ("web", "serve the project's Django WSGI app with gunicorn"),
        ("dev", "the split on this machine in one command, reloading workers on code changes"),
        ("secrets", "create the Secrets a release needs, once, in the cluster (the chart's Job)"),
    ):
        sub.add_parser(name, help=summary, add_help=False)
    args, rest = parser.parse_known_args(argv)
    if args.service == "interface":
        from channels_fleet.services.interface import main as run
    elif args.service == "worker":
        from channels_fleet.services.worker import main as run
    elif args.service == "dev":
        from channels_fleet.dev.command import main as run
    elif args.service == "secrets":
        from channels_fleet.kube.command import main as run
    else:
        from channels_fleet.services.web import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
