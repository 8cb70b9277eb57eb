"""The circuit breaker's states: closed, open after failures in a row, one trial half-open."""

from __future__ import annotations

import grpc
import pytest
from gateway.breaker import BREAKER_OPEN, BREAKER_OPENED, CircuitBreaker, CircuitOpen, State

pytestmark = pytest.mark.unit

OK = grpc.StatusCode.OK
DOWN = grpc.StatusCode.UNAVAILABLE
SLOW = grpc.StatusCode.DEADLINE_EXCEEDED


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(name: str, clock: Clock, failures: int = 3) -> CircuitBreaker:
    return CircuitBreaker(name, failures=failures, reset_seconds=5.0, clock=clock)


def call(b: CircuitBreaker, code: grpc.StatusCode) -> None:
    """One call through the breaker, ending with `code`."""
    b.record(code, trial=b.admit())


def gauge(name: str) -> float:
    return BREAKER_OPEN.labels(name)._value.get()


def test_failures_in_a_row_open_it_and_an_answer_in_between_starts_the_count_again() -> None:
    clock = Clock()
    b = breaker("unit.A", clock)
    opened = BREAKER_OPENED.labels("unit.A")._value.get()
    for code in (DOWN, SLOW, OK, DOWN, DOWN):
        call(b, code)
    assert b.state is State.CLOSED
    # errors that are answers show the upstream is there
    call(b, grpc.StatusCode.NOT_FOUND)
    call(b, grpc.StatusCode.INTERNAL)
    call(b, DOWN)
    call(b, DOWN)
    assert b.state is State.CLOSED
    call(b, SLOW)
    assert b.state is State.OPEN
    assert gauge("unit.A") == 1
    assert BREAKER_OPENED.labels("unit.A")._value.get() == opened + 1


def test_open_it_refuses_until_the_reset_time_then_lets_one_trial_through() -> None:
    clock = Clock()
    b = breaker("unit.B", clock)
    for _ in range(3):
        call(b, DOWN)
    clock.now += 2.0
    with pytest.raises(CircuitOpen) as refused:
        b.admit()
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
    assert refused.value.retry_after_header == "3"

    clock.now += 3.0
    assert b.admit() is True  # the trial
    with pytest.raises(CircuitOpen):
        b.admit()  # no second call while the trial is under way
    b.record(OK, trial=True)
    assert b.state is State.CLOSED
    assert gauge("unit.B") == 0
    assert b.admit() is False


def test_a_failed_trial_opens_it_for_another_reset_time() -> None:
    clock = Clock()
    b = breaker("unit.C", clock)
    for _ in range(3):
        call(b, DOWN)
    clock.now += 5.0
    call(b, SLOW)
    assert b.state is State.OPEN
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        b.admit()
    clock.now += 0.1
    assert b.admit() is True


def test_a_trial_the_client_gave_up_on_lets_the_next_call_be_the_trial() -> None:
    clock = Clock()
    b = breaker("unit.D", clock)
    for _ in range(3):
        call(b, DOWN)
    clock.now += 5.0
    assert b.admit() is True
    b.record(grpc.StatusCode.CANCELLED, trial=True)
    assert b.state is State.HALF_OPEN
    assert b.admit() is True


def test_late_outcomes_of_calls_made_while_closed() -> None:
    """A call admitted before the breaker opened may end after: a failure changes nothing
    (and does not restart the reset time), an answer closes it."""
    clock = Clock()
    b = breaker("unit.E", clock)
    in_flight = [b.admit() for _ in range(5)]
    assert in_flight == [False] * 5
    for _ in range(3):
        b.record(DOWN)
    assert b.state is State.OPEN
    clock.now += 4.0
    b.record(DOWN)
    clock.now += 1.0
    assert b.admit() is True  # the reset time ran from the opening
    b.record(OK)  # a late answer of one of the five
    assert b.state is State.CLOSED


def test_zero_failures_turns_it_off() -> None:
    b = breaker("unit.F", Clock(), failures=0)
    for _ in range(100):
        call(b, DOWN)
    assert b.state is State.CLOSED
    assert b.admit() is False
