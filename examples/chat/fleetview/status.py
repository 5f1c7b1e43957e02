"""The fleet's status as this process last read it, shared by every page and socket here.

One ``FleetStatus`` (one Redis connection) per process; a read is reused for ``MAX_AGE``
seconds, so any number of open fleet pages and status strips cost one read a second.
"""

import logging
import threading
import time

from channels_fleet.fleet import FleetStatus
from channels_fleet.settings import SettingsError

logger = logging.getLogger(__name__)

MAX_AGE = 0.5

_lock = threading.Lock()
_state = {"reader": None, "read_at": 0.0, "fleet": None, "error": None}


def current() -> dict:
    """The last read (at most MAX_AGE old): ``{"fleet": {...} or None, "error": str or None}``.
    Blocks up to a Redis timeout (1 s): from async code, call it in a thread."""
    with _lock:
        if time.monotonic() - _state["read_at"] >= MAX_AGE:
            _state["read_at"] = time.monotonic()
            try:
                if _state["reader"] is None:
                    _state["reader"] = FleetStatus()
                _state["fleet"], _state["error"] = _state["reader"].read(), None
            except SettingsError as exc:  # not under channels-fleet (runserver, one Daphne)
                _state["fleet"], _state["error"] = None, str(exc)
            except Exception as exc:
                if _state["error"] is None:
                    logger.warning("fleet status unreadable: %r", exc)
                _state["fleet"], _state["error"] = None, f"Redis unreadable: {exc}"
        return {"fleet": _state["fleet"], "error": _state["error"]}


def names() -> dict[str, str]:
    """Relay channel -> readable name (``i1``, ``w2``, a pod name) of every live process."""
    fleet = current()["fleet"] or {"processes": []}
    return {p["channel"]: p["name"] for p in fleet["processes"]}
