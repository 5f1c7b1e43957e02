"""Measured figures of the reliability scenarios (see conftest.py and the report script).

Imported by the tests as ``relfigures`` (never ``from conftest``: several test directories have
a conftest.py, and one pytest run sees only one module of that name).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any


class Figures:
    """Collects one scenario's measured figures and writes them out, pass or fail."""

    def __init__(self, test: str) -> None:
        self.test = test
        self.rows: list[dict[str, Any]] = []

    def record(self, scenario: str, run: str, counted: str, result: str, ok: bool,
               **numbers: Any) -> None:
        self.rows.append({"scenario": scenario, "run": run, "counted": counted, "result": result,
                          "ok": bool(ok), "test": self.test, "numbers": numbers,
                          "at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())})

    def flush(self) -> None:
        path = os.environ.get("RELIABILITY_RESULTS")
        if not path or not self.rows:
            return
        with open(path, "a", encoding="utf-8") as out:
            for row in self.rows:
                out.write(json.dumps(row) + "\n")


def rehome_modes() -> list[str]:
    """The worker-loss modes this build has: 'off' always; 'on' once issue 9's setting exists."""
    from channels_fleet.interface.settings import InterfaceSettings

    fields = getattr(InterfaceSettings, "__dataclass_fields__", {})
    return ["off", "on"] if "rehome" in fields else ["off"]


def full_run() -> bool:
    """``make test-reliability`` (RELIABILITY_FULL=1) runs every variant; ``make test`` the
    cheaper half of some (noted where a test uses this)."""
    return os.environ.get("RELIABILITY_FULL", "") not in ("", "0")

