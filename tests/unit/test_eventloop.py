"""The services' event loop: uvloop where installed (uvicorn's --loop auto), asyncio on asking."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from channels_fleet.services import eventloop
from channels_fleet.settings import SettingsError
from channels_fleet.worker.settings import WorkerSettings

UVLOOP = importlib.util.find_spec("uvloop") is not None
URL = ("redis://127.0.0.1:7000",)


@pytest.mark.skipif(not UVLOOP, reason="uvloop is not installed in this Python")
def test_auto__uvloop_where_installed() -> None:
    assert eventloop.chosen("auto") == "uvloop"
    assert eventloop.chosen("uvloop") == "uvloop"


def test_asyncio__asyncio_whatever_is_installed() -> None:
    assert eventloop.chosen("asyncio") == "asyncio"


def test_an_unknown_loop__refused_with_the_choices() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_LOOP='trio': use auto, asyncio or"):
        WorkerSettings.from_env({"CHANNELS_FLEET_LOOP": "trio"}, redis_url=URL, app="a:b")


@pytest.mark.parametrize("loop", ["auto", "asyncio"])
def test_use__every_new_loop_of_the_process_is_the_chosen_one(loop: str) -> None:
    # A process of its own: the policy is process-wide.
    code = ("import asyncio; from channels_fleet.services import eventloop; "
            f"name = eventloop.use({loop!r}); "
            "print(name, type(asyncio.new_event_loop()).__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    expected = "uvloop" if loop == "auto" and UVLOOP else "asyncio"
    assert out[0] == expected
    assert out[1].startswith(expected)


def test_uvloop_where_it_is_not_installed__refused_naming_the_cause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SettingsError, match="uvloop is not installed"):
        eventloop.chosen("uvloop")
    assert eventloop.chosen("auto") == "asyncio"
