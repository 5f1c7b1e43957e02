"""The pace of a draining interface's 1001 closes (``close_pacing``)."""

from __future__ import annotations

import pytest

from channels_fleet.interface.limits import close_pacing
from channels_fleet.interface.settings import InterfaceSettings
from channels_fleet.settings import SettingsError


def test_close_pacing__rate_gives_batches_a_twentieth_of_a_second_apart() -> None:
    batch, pause = close_pacing(5000, 500, 25)
    assert batch == 25
    assert pause == pytest.approx(0.05)
    assert (5000 / batch) * pause == pytest.approx(10)  # 5,000 sockets over 10 s


def test_close_pacing__speeds_up_to_end_within_60_percent_of_the_drain() -> None:
    batch, pause = close_pacing(30000, 500, 25)  # 60 s at 500/s: too slow for 25 s
    assert (30000 / batch) * pause == pytest.approx(15, rel=0.01)


def test_close_pacing__zero_rate_or_no_sockets_is_one_batch_at_once() -> None:
    assert close_pacing(700, 0, 25) == (700, 0.0)
    assert close_pacing(0, 500, 25) == (1, 0.0)


def test_close_pacing__slow_rate_closes_one_at_a_time() -> None:
    assert close_pacing(3, 10, 25) == (1, pytest.approx(0.1))


def test_drain_close_rate__negative_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match="CHANNELS_FLEET_DRAIN_CLOSE_RATE"):
        InterfaceSettings.from_env({"CHANNELS_FLEET_REDIS_URL": "redis://127.0.0.1:1",
                                    "CHANNELS_FLEET_DRAIN_CLOSE_RATE": "-1"})
