"""The ``channels-fleet`` command: one entry point, one subcommand per service."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="channels-fleet", description=__doc__)
    sub = parser.add_subparsers(dest="service", required=True)
    sub.add_parser("interface", help="serve sockets with Daphne and relay them to workers")
    sub.add_parser("worker", help="run a Channels project's ASGI app for relayed connections")
    sub.add_parser("web", help="serve the project's Django WSGI app with gunicorn")
    args, rest = parser.parse_known_args(argv)
    if args.service == "interface":
        from services.interface.main import main as run
    elif args.service == "worker":
        from services.worker.main import main as run
    else:
        from services.web.main import main as run
    return run(rest)


if __name__ == "__main__":
    sys.exit(main())
