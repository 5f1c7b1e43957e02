"""Resumable sessions' settings: off without a key; the key hidden, long enough; bounds checked."""

from __future__ import annotations

import pytest

from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError
from channels_fleet.worker.settings import WorkerSettings

ENV = {"CHANNELS_FLEET_REDIS_URL": "redis://127.0.0.1:7000", "CHANNELS_FLEET_APP": "a.b:app"}
KEY = "x7Yq" * 12  # 48 characters, as the chart generates


def test_resume__off_by_default_on_with_a_key() -> None:
    assert not InterfaceSettings.from_env(ENV).resume
    settings = InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_RESUME_KEY": KEY})
    assert settings.resume and settings.resume_key == KEY


def test_resume_key__never_in_the_settings_repr() -> None:
    settings = InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_RESUME_KEY": KEY})
    assert KEY not in repr(settings)


def test_resume_key__shorter_than_32_bytes_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_RESUME_KEY must be at least 32"):
        InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_RESUME_KEY": "k" * 31})
    # bytes, not characters: 11 three-byte characters are 33 bytes
    assert InterfaceSettings.from_env({**ENV, "CHANNELS_FLEET_RESUME_KEY": "€" * 11}).resume


def test_resume_key__needs_rehoming() -> None:
    env = {**ENV, "CHANNELS_FLEET_RESUME_KEY": KEY, "CHANNELS_FLEET_REHOME": "off"}
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_REHOME on"):
        InterfaceSettings.from_env(env)


def test_resume_window_and_bounds__defaults_match_the_clients() -> None:
    worker = WorkerSettings.from_env(ENV)
    assert (worker.resume_window, worker.resume_frames, worker.resume_bytes) == (
        60.0, 1000, 1024 * 1024)


def test_resume_window_and_bounds__from_env() -> None:
    worker = WorkerSettings.from_env({
        **ENV, "CHANNELS_FLEET_RESUME_WINDOW": "0", "CHANNELS_FLEET_RESUME_FRAMES": "10",
        "CHANNELS_FLEET_RESUME_BYTES": "4096",
    })
    assert (worker.resume_window, worker.resume_frames, worker.resume_bytes) == (0.0, 10, 4096)


@pytest.mark.parametrize(("name", "value"), [
    ("RESUME_WINDOW", "-1"), ("RESUME_WINDOW", "3601"), ("RESUME_FRAMES", "0"),
    ("RESUME_BYTES", "0"),
])
def test_resume_window_and_bounds__checked(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"CHANNELS_FLEET_{name}"):
        WorkerSettings.from_env({**ENV, f"CHANNELS_FLEET_{name}": value})


def test_resume_window__not_a_number_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_RESUME_WINDOW"):
        WorkerSettings.from_env({**ENV, "CHANNELS_FLEET_RESUME_WINDOW": "a minute"})
