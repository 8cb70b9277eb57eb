"""The saga log's rules: backoff bounds, claims, and what a cancellation does to a saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from order_service.domain.model import SagaMode
from order_service.domain.saga import RetryPolicy, Saga, SagaStep
from order_service.entrypoints.event_consumers import HANDLERS
from tienda_contracts.topology import SUBSCRIPTIONS

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)


def saga() -> Saga:
    return Saga.start(order_id="o", mode=SagaMode.ORCHESTRATION, step=SagaStep.RESERVE, now=T0)


def test_backoff_doubles_with_jitter_up_to_a_ceiling() -> None:
    policy = RetryPolicy(base_seconds=1, max_seconds=10)
    assert policy.delay(1, rand=1.0) == timedelta(seconds=1)
    assert policy.delay(1, rand=0.0) == timedelta(seconds=0.5)
    assert policy.delay(3, rand=1.0) == timedelta(seconds=4)
    assert policy.delay(60, rand=1.0) == timedelta(seconds=10)
    assert timedelta(seconds=5) <= policy.delay(60) <= timedelta(seconds=10)


def test_a_transient_failure_unclaims_and_waits() -> None:
    log = saga()
    log.claim(worker="w", until=T0 + timedelta(seconds=30), now=T0)
    log.retry_later(error="x" * 10_000, now=T0, policy=RetryPolicy(base_seconds=2))
    assert (log.claimed_by, log.attempts, len(log.last_error)) == ("", 1, 500)
    assert log.next_attempt_time is not None
    assert T0 + timedelta(seconds=1) <= log.next_attempt_time <= T0 + timedelta(seconds=2)


def test_a_cancellation_is_due_at_once_unless_a_worker_holds_the_saga() -> None:
    idle = saga()
    idle.retry_later(error="down", now=T0, policy=RetryPolicy(base_seconds=60))
    idle.give_back(now=T0)
    assert (idle.step, idle.next_attempt_time, idle.attempts) == (SagaStep.GIVE_BACK, T0, 0)

    held = saga()
    lease_end = T0 + timedelta(seconds=30)
    held.claim(worker="w", until=lease_end, now=T0)
    held.give_back(now=T0)
    assert (held.step, held.claimed_by, held.next_attempt_time) == (
        SagaStep.GIVE_BACK,
        "w",
        lease_end,
    )


def test_a_done_saga_is_never_due_again() -> None:
    log = saga()
    log.claim(worker="w", until=T0, now=T0)
    log.advance(SagaStep.RELEASE, now=T0, reason="payment declined")
    log.advance(SagaStep.DONE, now=T0)
    assert (log.next_attempt_time, log.claimed_by, log.reason) == (None, "", "payment declined")


def test_consumers_handle_exactly_what_the_topology_declares_for_their_groups() -> None:
    for group, handlers in HANDLERS.items():
        declared = {t for s in SUBSCRIPTIONS if s.group == group for t in s.event_types}
        assert set(handlers) == declared, group
