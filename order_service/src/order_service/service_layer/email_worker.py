"""Sends queued emails and keeps their attempts in the database.

Like the webhook worker: claim (attempt counted, lease set) in one transaction, send outside
it, store the outcome in another. An email marked SENT is never sent again; only a mailer that
dies between the server's answer and that commit can send one twice (a send is bounded as a
whole by the mailer's timeout, well within the lease, so a slow server cannot outlast it and
have another worker send the email meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from loguru import logger
from prometheus_client import Counter
from tienda_platform.telemetry import span_in_trace

from order_service.domain.notifications import Email, EmailStatus
from order_service.domain.retry import RetryPolicy
from order_service.service_layer.notification_ports import Mailer
from order_service.service_layer.notification_unit_of_work import AbstractNotificationUnitOfWork
from order_service.service_layer.polling import PollingLoop
from order_service.service_layer.webhooks import utc_now

EMAILS = Counter(
    "tienda_emails", "Email sending attempts by result (sent, failed_attempt, gave_up).", ["result"]
)


class EmailWorker:
    """The background job that works off the outgoing_emails table."""

    def __init__(
        self,
        *,
        uow_factory: Callable[[], AbstractNotificationUnitOfWork],
        mailer: Mailer,
        policy: RetryPolicy,
        batch_size: int = 20,
        idle_seconds: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow_factory = uow_factory
        self._mailer = mailer
        self._policy = policy
        self._batch_size = batch_size
        self._clock = clock
        self._loop = PollingLoop(
            self.send_due, name="email worker", batch_size=batch_size, idle_seconds=idle_seconds
        )

    def notify(self) -> None:
        """New emails were committed: send them now."""
        self._loop.notify()

    async def run(self) -> None:
        """Send until cancelled."""
        await self._loop.run()

    async def send_due(self) -> int:
        """Claim and send one batch of due emails; returns how many were due."""
        claimed = await self._claim_due()
        await asyncio.gather(*(self._traced_attempt(email) for email in claimed))
        return len(claimed)

    async def _traced_attempt(self, email: Email) -> None:
        # a span in the trace of the event that caused the email
        with span_in_trace(
            "email send",
            email.trace_parent,
            event_id=email.event_id,
            user_id=email.user_id,
            order_id=email.order_id,
        ):
            await self._attempt(email)

    async def _claim_due(self) -> list[Email]:
        now = self._clock()
        claimed: list[Email] = []
        gave_up = 0
        async with self._uow_factory() as uow:
            for email in await uow.emails.due(now=now, limit=self._batch_size):
                if self._policy.exhausted(email.attempts):
                    await uow.emails.save(email.interrupted())
                    gave_up += 1
                    continue
                email = email.claimed(now=now, policy=self._policy)
                await uow.emails.save(email)
                claimed.append(email)
            await uow.commit()
        EMAILS.labels("gave_up").inc(gave_up)
        return claimed

    async def _attempt(self, email: Email) -> None:
        error = ""
        try:
            await self._mailer.send(
                recipient=email.recipient, subject=email.subject, body=email.body
            )
        except Exception as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        async with self._uow_factory() as uow:
            current = await uow.emails.get(email.event_id, for_update=True)
            if current is None or current.status != EmailStatus.PENDING:
                return
            if current.attempts != email.attempts:  # the lease ran out; another mailer took it
                return
            now = self._clock()
            updated = (
                current.failed(error=error, now=now, policy=self._policy)
                if error
                else current.sent(now=now)
            )
            await uow.emails.save(updated)
            await uow.commit()
        result = {
            EmailStatus.SENT: "sent",
            EmailStatus.PENDING: "failed_attempt",
            EmailStatus.FAILED: "gave_up",
        }[updated.status]
        EMAILS.labels(result).inc()
        if error:
            logger.warning(
                "email not sent (attempt {attempts}): {error}",
                attempts=updated.attempts,
                error=error,
                event_id=email.event_id,
            )
