"""Re-homing settings: on by default, `off` restores 1012 closes; batches are bounded."""

from __future__ import annotations

import pytest

from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError
from channels_fleet.worker.settings import WorkerSettings

ENV = {"CHANNELS_FLEET_REDIS_URL": "redis://127.0.0.1:7000", "CHANNELS_FLEET_APP": "a.b:app"}


def test_rehome_is_on_by_default_with_bounded_batches() -> None:
    worker = WorkerSettings.from_env(ENV)
    assert worker.rehome and InterfaceSettings.from_env(ENV).rehome
    assert (worker.rehome_batch, worker.rehome_pause) == (50, 0.05)


@pytest.mark.parametrize("value", ["off", "false", "0", "no"])
def test_rehome_off(value: str) -> None:
    env = {**ENV, "CHANNELS_FLEET_REHOME": value}
    assert not WorkerSettings.from_env(env).rehome
    assert not InterfaceSettings.from_env(env).rehome


def test_rehome_batch_and_pause_from_env_and_checked() -> None:
    env = {**ENV, "CHANNELS_FLEET_REHOME_BATCH": "10", "CHANNELS_FLEET_REHOME_PAUSE": "0.2"}
    worker = WorkerSettings.from_env(env)
    assert (worker.rehome_batch, worker.rehome_pause) == (10, 0.2)
    with pytest.raises(SettingsError, match="REHOME_BATCH"):
        WorkerSettings.from_env({**ENV, "CHANNELS_FLEET_REHOME_BATCH": "0"})
    with pytest.raises(SettingsError, match="REHOME_PAUSE"):
        WorkerSettings.from_env({**ENV, "CHANNELS_FLEET_REHOME_PAUSE": "-1"})


def test_graphql_subprotocols_are_not_rehomed_by_default() -> None:
    default = ("graphql-transport-ws", "graphql-ws")
    assert WorkerSettings.from_env(ENV).rehome_except_subprotocols == default
    assert InterfaceSettings.from_env(ENV).rehome_except_subprotocols == default
    env = {**ENV, "CHANNELS_FLEET_REHOME_EXCEPT_SUBPROTOCOLS": "none"}
    assert WorkerSettings.from_env(env).rehome_except_subprotocols == ("none",)
