"""The saga log of an order: which step comes next, and when and by whom it may run.

Orchestrated orders go RESERVE -> PAY -> COMMIT -> DONE, or to RELEASE (the compensation) after
a failed payment or commit. Choreographed orders only have the steps order_service itself
performs: PAY (after stock.reserved). Either kind goes to GIVE_BACK when the order is cancelled
under it: the stock (orchestration) and any charge go back, and the saga is DONE.

A worker claims a due saga for a lease: `next_attempt_time` then holds the lease's end, so a
crashed worker's saga becomes due again once its lease runs out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from order_service.domain.model import SagaMode

# Longest error text kept on a saga (it is for operators, not for clients).
MAX_ERROR_CHARS = 500


class SagaStep(StrEnum):
    RESERVE = "RESERVE"
    PAY = "PAY"
    COMMIT = "COMMIT"
    RELEASE = "RELEASE"
    GIVE_BACK = "GIVE_BACK"
    DONE = "DONE"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter between attempts of a step that failed transiently."""

    base_seconds: float = 0.2
    max_seconds: float = 30.0

    def delay(self, attempts: int, *, rand: float | None = None) -> timedelta:
        """The wait before attempt number attempts + 1 (attempts >= 1)."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** min(attempts - 1, 30))
        factor = 0.5 + 0.5 * (random.random() if rand is None else rand)
        return timedelta(seconds=ceiling * factor)


@dataclass
class Saga:
    """The persisted progress of one order's saga."""

    order_id: str
    mode: SagaMode
    step: SagaStep
    # Why the order is being compensated (RELEASE): the order's CANCELLED reason.
    reason: str
    attempts: int
    # When the saga is due (or, while claimed, when the claim expires); None once DONE.
    next_attempt_time: datetime | None
    last_error: str
    claimed_by: str
    create_time: datetime
    update_time: datetime
    # W3C traceparent of the span that created it ("" untraced): its work joins that trace.
    trace_parent: str = ""

    @classmethod
    def start(cls, *, order_id: str, mode: SagaMode, step: SagaStep, now: datetime) -> Saga:
        """A saga due now at step."""
        return cls(
            order_id=order_id,
            mode=mode,
            step=step,
            reason="",
            attempts=0,
            next_attempt_time=now,
            last_error="",
            claimed_by="",
            create_time=now,
            update_time=now,
        )

    @property
    def is_done(self) -> bool:
        return self.step is SagaStep.DONE

    def claim(self, *, worker: str, until: datetime, now: datetime) -> None:
        self.claimed_by = worker
        self.next_attempt_time = until
        self.update_time = now

    def advance(self, step: SagaStep, *, now: datetime, reason: str = "") -> None:
        """The current step is done; the next one starts afresh."""
        self.step = step
        self.reason = reason or self.reason
        self.attempts = 0
        self.last_error = ""
        self.update_time = now
        if step is SagaStep.DONE:
            self.claimed_by = ""
            self.next_attempt_time = None

    def give_back(self, *, now: datetime) -> None:
        """The order was cancelled: whatever the saga took must go back.

        A claimed saga keeps its claim: its worker sees the new step when it stores the
        outcome of the step it is running, and carries on with this one.
        """
        self.step = SagaStep.GIVE_BACK
        self.attempts = 0
        self.last_error = ""
        self.update_time = now
        if not self.claimed_by:
            self.next_attempt_time = now

    def retry_later(self, *, error: str, now: datetime, policy: RetryPolicy) -> None:
        """The step failed transiently: unclaim and try again after a backoff."""
        self.attempts += 1
        self.last_error = error[:MAX_ERROR_CHARS]
        self.claimed_by = ""
        self.next_attempt_time = now + policy.delay(self.attempts)
        self.update_time = now
