"""Who served this connection: the interface and the worker from ``scope["fleet"]``."""

import os


def served_by(scope) -> dict:
    fleet = (scope or {}).get("fleet")
    if fleet is None:  # not relayed: a single-process server (runserver, daphne) or gunicorn
        return {"interface": None, "worker": f"pid {os.getpid()}", "rehomed": 0}
    return {"interface": fleet.get("interface"), "worker": fleet.get("worker"),
            "rehomed": fleet.get("rehomed", 0)}
