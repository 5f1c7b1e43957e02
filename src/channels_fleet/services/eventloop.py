"""The event loop a service runs on: uvloop where it is installed, else asyncio's own.

As uvicorn's ``--loop auto``: uvloop does the loop's own work (ready callbacks, timers, socket
reads and writes) in C, and that work is a large part of what a relayed message costs in
Python (docs/benchmarks.md, "The event loop"). ``CHANNELS_FLEET_LOOP`` picks: ``auto`` (the
default), ``uvloop`` (refused at start where it is not installed), or ``asyncio``, to rule the
loop out when chasing a problem.
"""

from __future__ import annotations

import asyncio
import importlib.util
import warnings

from channels_fleet.settings import SettingsError


def chosen(loop: str) -> str:
    """The loop ``loop`` (auto, asyncio or uvloop: checked by the settings) is here."""
    installed = importlib.util.find_spec("uvloop") is not None
    if loop == "uvloop" and not installed:
        raise SettingsError("CHANNELS_FLEET_LOOP=uvloop, but uvloop is not installed in this "
                            "Python (pip install uvloop, or use auto)")
    return "uvloop" if loop != "asyncio" and installed else "asyncio"


def use(loop: str) -> str:
    """Make every new event loop of this process ``loop``'s, before any is made (Daphne makes
    the interface's at import); returns which one it is."""
    name = chosen(loop)
    if name == "uvloop":
        import uvloop

        # A policy, not asyncio.run's loop_factory: Daphne makes its loop at import with
        # asyncio.new_event_loop(), which only a policy reaches. Python 3.14 deprecates
        # policies (removed in 3.16); until then the warning says nothing actionable here.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return name
