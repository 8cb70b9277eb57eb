"""The uncertainty `make bench` prints beside the tracing figures."""

from __future__ import annotations

import pytest
from tienda_devstack.bench import round_ratio_interval

pytestmark = pytest.mark.unit


def test_the_interval_is_that_of_the_mean_of_the_rounds_own_ratios() -> None:
    # ratios 0.8, 0.9, 0.7, 0.8: mean 0.8, standard deviation 0.0816..., four rounds
    low, high = round_ratio_interval([40.0, 45.0, 35.0, 40.0], [50.0, 50.0, 50.0, 50.0])
    half = 1.96 * 0.08164965809277261 / 2
    assert (low, high) == pytest.approx((0.8 - half, 0.8 + half))


def test_rounds_that_agree_leave_no_doubt_and_one_round_gives_no_interval() -> None:
    assert round_ratio_interval([30.0, 60.0], [40.0, 80.0]) == pytest.approx((0.75, 0.75))
    assert round_ratio_interval([30.0], [40.0]) == (0.75, 0.75)


def test_rounds_are_paired() -> None:
    with pytest.raises(ValueError):
        round_ratio_interval([30.0, 40.0], [40.0])
