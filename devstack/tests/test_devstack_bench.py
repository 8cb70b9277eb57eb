"""How `make bench` schedules the tracing bursts, and the uncertainty it prints beside them."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import pytest
from tienda_devstack.bench import (
    TRACING_ROUNDS,
    TRACING_STACKS,
    round_ratio_interval,
    tracing_schedule,
)

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


def test_each_setting_takes_each_place_in_the_rounds_equally_often_over_fresh_stacks() -> None:
    labels = ["off", "metrics", "every trace", "one in ten"]
    schedule = tracing_schedule(labels, TRACING_ROUNDS, TRACING_STACKS)
    assert TRACING_STACKS > 1 and len(schedule) == TRACING_STACKS
    # the rounds are shared out in order, the same number to each set of stacks
    assert [n for part in schedule for n, _ in part] == list(range(TRACING_ROUNDS))
    assert {len(part) for part in schedule} == {TRACING_ROUNDS // TRACING_STACKS}
    # every round runs every setting once; the order rotates by one from round to round
    places = Counter(
        (label, place)
        for part in schedule
        for _, order in part
        for place, label in enumerate(order)
    )
    assert all(sorted(order) == sorted(labels) for part in schedule for _, order in part)
    assert set(places.values()) == {TRACING_ROUNDS // len(labels)}
    rounds = [order for part in schedule for _, order in part]
    assert all(b == a[1:] + a[:1] for a, b in pairwise(rounds))
