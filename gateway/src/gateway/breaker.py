"""A circuit breaker per upstream service (closed, open, half-open; Nygard, "Release It!").

When an upstream fails `failures` calls in a row (it cannot be reached, or does not answer
within the deadline), the breaker opens: for `reset_seconds` the gateway calls it no more and
answers at once, as the upstream would have, UNAVAILABLE (503 with Retry-After, or the
degraded order details). A request no longer waits out a deadline, nor pays the channel's
retries, to learn what the previous ones learned; and a struggling upstream is left alone to
recover. Then one trial call goes through (half-open): an answer closes the breaker, a
failure opens it again. Any answer counts as the upstream being there, errors such as
NOT_FOUND or INVALID_ARGUMENT included; a call the client gave up on (CANCELLED) says
nothing about the upstream.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable

import grpc
from prometheus_client import Counter, Gauge

# Codes by which an upstream shows it is not there; any other answer shows it is.
FAILURES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})

BREAKER_OPEN = Gauge(
    "gateway_circuit_breaker_open",
    "1 while the circuit breaker of an upstream is open or half-open (calls refused), else 0.",
    ["upstream"],
)
BREAKER_OPENED = Counter(
    "gateway_circuit_breaker_opened_total",
    "Times the circuit breaker of an upstream opened.",
    ["upstream"],
)
BREAKER_REFUSED = Counter(
    "gateway_circuit_breaker_refused_calls_total",
    "Calls answered UNAVAILABLE by an open circuit breaker without calling the upstream.",
    ["upstream"],
)


class State(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitOpen(grpc.aio.AioRpcError):
    """UNAVAILABLE, answered by the breaker instead of the upstream."""

    def __init__(self, upstream: str, retry_after: float) -> None:
        super().__init__(
            grpc.StatusCode.UNAVAILABLE,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"{upstream} is not being called: it failed repeatedly (circuit open)",
        )
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """Whole seconds until the breaker lets a trial call through, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


class CircuitBreaker:
    """The breaker of one upstream. Call `admit()` before each call (it raises CircuitOpen
    when the call must not be made), then `record(code, trial=...)` with its outcome
    (CANCELLED when it ended without one)."""

    def __init__(
        self,
        upstream: str,
        *,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.upstream = upstream
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self.state = State.CLOSED
        self._failed = 0  # in a row
        self._opened_at = 0.0
        self._trial = False  # a half-open trial call is under way
        BREAKER_OPEN.labels(upstream).set(0)

    @property
    def enabled(self) -> bool:
        return self._threshold > 0

    def admit(self) -> bool:
        """Whether the call is the half-open trial; raises CircuitOpen if it may not go."""
        if self.state is State.CLOSED or not self.enabled:
            return False
        waited = self._clock() - self._opened_at
        if self.state is State.OPEN and waited >= self._reset:
            self.state = State.HALF_OPEN
        if self.state is State.HALF_OPEN and not self._trial:
            self._trial = True
            return True
        BREAKER_REFUSED.labels(self.upstream).inc()
        raise CircuitOpen(self.upstream, max(self._reset - waited, 0.0))

    def record(self, code: grpc.StatusCode, *, trial: bool = False) -> None:
        """The outcome of an admitted call (`trial`: what admit() said of it)."""
        if trial:
            self._trial = False
        if code is grpc.StatusCode.CANCELLED:
            return
        if code not in FAILURES:
            # an answer, from the trial or from a call made before the breaker opened
            if self.state is State.CLOSED:
                self._failed = 0
            else:
                self._close()
            return
        if self.state is State.CLOSED:
            self._failed += 1
            if self.enabled and self._failed >= self._threshold:
                BREAKER_OPENED.labels(self.upstream).inc()
                self._open()
        elif trial:
            self._open()
        # otherwise a call made before the breaker opened, failing late: it is open already

    def _open(self) -> None:
        self.state = State.OPEN
        self._opened_at = self._clock()
        BREAKER_OPEN.labels(self.upstream).set(1)

    def _close(self) -> None:
        self.state = State.CLOSED
        self._failed = 0
        BREAKER_OPEN.labels(self.upstream).set(0)
