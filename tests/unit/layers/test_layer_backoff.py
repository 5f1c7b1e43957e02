"""The one back-off policy of the project's retry loops."""

from __future__ import annotations

import pytest

from channels_fleet.layers.backoff import Backoff


def test_delay__doubles_from_base_up_to_cap() -> None:
    policy = Backoff(base=0.05, cap=0.5)
    assert [policy.delay(n) for n in range(1, 7)] == pytest.approx(
        [0.05, 0.1, 0.2, 0.4, 0.5, 0.5])
    assert policy.delay(10_000) == 0.5  # no overflow however long Redis stays away


def test_delay__with_jitter__in_the_upper_half() -> None:
    policy = Backoff(base=1.0, cap=8.0, jitter=True)
    assert all(2.0 <= policy.delay(3) <= 4.0 for _ in range(100))


def test_base_above_cap__refused() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        Backoff(base=1.0, cap=0.5)
