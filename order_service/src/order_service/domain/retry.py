"""When to try again: exponential backoff with full jitter, bounded attempts."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how far apart a delivery is attempted.

    `lease` is how long an attempt may stay in flight: a worker that dies mid-attempt leaves
    the row claimed, and it becomes due again once the lease runs out.
    """

    max_attempts: int
    base_delay: timedelta
    max_delay: timedelta
    lease: timedelta
    # Full jitter ("Exponential Backoff And Jitter", AWS architecture blog): uniform in
    # [0, cap), so a burst of failures does not come back as a burst.
    uniform: Callable[[float, float], float] = field(default=random.uniform, compare=False)

    def delay_after(self, attempts: int) -> timedelta:
        """The wait before the next attempt, after `attempts` failed ones."""
        exponent = min(max(attempts - 1, 0), 32)
        cap = min(self.max_delay.total_seconds(), self.base_delay.total_seconds() * 2**exponent)
        return timedelta(seconds=self.uniform(0.0, cap))

    def exhausted(self, attempts: int) -> bool:
        """Whether no attempt is left after `attempts` of them."""
        return attempts >= self.max_attempts
