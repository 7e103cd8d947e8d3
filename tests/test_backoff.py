"""The one retry schedule: doubling from the first wait, capped, jittered within its share."""

from __future__ import annotations

import pytest

from proxy.backoff import Backoff


def test_waits_double_from_the_first_and_stop_at_the_cap() -> None:
    backoff = Backoff(0.5, 3.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_without_a_cap_a_long_outage_still_gives_a_finite_wait() -> None:
    assert Backoff(1.0).delay(10) == 512.0
    assert Backoff(1.0).delay(5000) < float("inf")


def test_jitter_spreads_each_wait_within_its_share() -> None:
    backoff = Backoff(2.0, 30.0, jitter=0.2)
    assert backoff.delay(1, uniform=lambda lo, hi: lo) == pytest.approx(1.6)
    assert backoff.delay(1, uniform=lambda lo, hi: hi) == pytest.approx(2.4)
    assert all(1.6 <= backoff.delay(1) <= 2.4 for _ in range(200))


@pytest.mark.parametrize("args", [(-1.0,), (1.0, -1.0), (1.0, 2.0, 1.0)])
def test_a_nonsense_schedule_is_refused_naming_its_values(args: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="backoff: first_s and max_s must be >= 0"):
        Backoff(*args)
