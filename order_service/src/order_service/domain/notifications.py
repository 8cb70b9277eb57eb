"""Emails to customers: what they say, and the state of each one on its way out."""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from order_service.domain.retry import RetryPolicy

_STATUS_WORDS = {
    "order.confirmed": ("confirmed", "Your order is confirmed and on its way to being packed."),
    "order.cancelled": ("cancelled", "Your order was cancelled."),
    "order.rejected": ("rejected", "We could not accept your order."),
}
TERMINAL_ORDER_EVENTS = tuple(_STATUS_WORDS)


class EmailStatus(enum.StrEnum):
    PENDING = "PENDING"
    SENT = "SENT"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Email:
    """An email caused by one event (its id is the email's key), with its sending attempts."""

    event_id: str
    recipient: str
    subject: str
    body: str
    status: EmailStatus
    attempts: int
    last_error: str
    next_attempt_time: datetime | None
    create_time: datetime
    sent_time: datetime | None = None
    # whom and which order it is about ("" for none): its attempts' spans carry them as
    # user.id and order.id (never the address)
    user_id: str = ""
    order_id: str = ""
    # W3C traceparent of the span that created it ("" untraced): its work joins that trace.
    trace_parent: str = ""

    @classmethod
    def new(
        cls,
        *,
        event_id: str,
        recipient: str,
        subject: str,
        body: str,
        now: datetime,
        user_id: str = "",
        order_id: str = "",
    ) -> Email:
        return cls(
            event_id=event_id,
            user_id=user_id,
            order_id=order_id,
            recipient=recipient,
            subject=subject,
            body=body,
            status=EmailStatus.PENDING,
            attempts=0,
            last_error="",
            next_attempt_time=now,
            create_time=now,
        )

    def claimed(self, *, now: datetime, policy: RetryPolicy) -> Email:
        """Counted as an attempt, hidden from other mailers until the lease runs out."""
        return replace(self, attempts=self.attempts + 1, next_attempt_time=now + policy.lease)

    def interrupted(self) -> Email:
        """Its last allowed attempt was claimed and never reported (the mailer died)."""
        return replace(
            self,
            status=EmailStatus.FAILED,
            last_error=self.last_error or "the last attempt was interrupted",
            next_attempt_time=None,
        )

    def sent(self, *, now: datetime) -> Email:
        return replace(
            self, status=EmailStatus.SENT, last_error="", next_attempt_time=None, sent_time=now
        )

    def failed(self, *, error: str, now: datetime, policy: RetryPolicy) -> Email:
        """Retry later, or give up once the attempts are used up."""
        done = policy.exhausted(self.attempts)
        return replace(
            self,
            status=EmailStatus.FAILED if done else EmailStatus.PENDING,
            last_error=error[:1000],
            next_attempt_time=None if done else now + policy.delay_after(self.attempts),
        )


def welcome_email(*, full_name: str) -> tuple[str, str]:
    """Subject and body of the email a new customer gets."""
    return (
        "Welcome to tienda",
        f"Hello {full_name or 'there'},\n\nyour tienda account is ready. Happy shopping!\n",
    )


def order_email(
    *, event_type: str, full_name: str, order_id: str, reason: str, total_cents: int
) -> tuple[str, str]:
    """Subject and body of the email about an order reaching a terminal state."""
    word, sentence = _STATUS_WORDS[event_type]
    lines = [
        f"Hello {full_name or 'there'},",
        "",
        sentence,
        "",
        f"Order: {order_id}",
        f"Total: {total_cents // 100}.{total_cents % 100:02d}",
    ]
    if reason:
        lines.append(f"Reason: {reason}")
    return f"Your order {order_id} was {word}", "\n".join(lines) + "\n"
