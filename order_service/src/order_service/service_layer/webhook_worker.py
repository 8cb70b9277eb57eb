"""Sends due webhook deliveries and keeps their attempts in the database.

Every step is persisted: a delivery is claimed (attempt counted, lease set) in one
transaction, sent outside any transaction, and its outcome stored in another. A worker that
dies mid-send leaves the claim behind; the delivery becomes due again when the lease ends, so a
restart loses nothing (receivers dedupe on `webhook-id`, as Standard Webhooks asks).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

from loguru import logger
from prometheus_client import Counter
from tienda_platform.telemetry import span_in_trace

from order_service.domain.retry import RetryPolicy
from order_service.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery, signature
from order_service.service_layer.notification_ports import (
    AddressResolver,
    HttpOutcome,
    WebhookSender,
)
from order_service.service_layer.notification_unit_of_work import AbstractNotificationUnitOfWork
from order_service.service_layer.polling import PollingLoop
from order_service.service_layer.webhooks import DestinationRefused, check_destination, utc_now

WEBHOOK_DELIVERIES = Counter(
    "tienda_webhook_deliveries_total",
    "Webhook delivery attempts by result (succeeded, failed_attempt, gave_up).",
    ["result"],
)


class WebhookDeliveryWorker:
    """The background job that works off the webhook_deliveries table."""

    def __init__(
        self,
        *,
        uow_factory: Callable[[], AbstractNotificationUnitOfWork],
        sender: WebhookSender,
        resolver: AddressResolver,
        allow_private: bool,
        policy: RetryPolicy,
        batch_size: int = 50,
        idle_seconds: float = 1.0,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._uow_factory = uow_factory
        self._sender = sender
        self._resolver = resolver
        self._allow_private = allow_private
        self._policy = policy
        self._batch_size = batch_size
        self._clock = clock
        self._loop = PollingLoop(
            self.deliver_due,
            name="webhook delivery worker",
            batch_size=batch_size,
            idle_seconds=idle_seconds,
        )

    def notify(self) -> None:
        """New deliveries were committed: send them now."""
        self._loop.notify()

    async def run(self) -> None:
        """Deliver until cancelled."""
        await self._loop.run()

    async def deliver_due(self) -> int:
        """Claim and send one batch of due deliveries; returns how many were due."""
        claimed = await self._claim_due()
        await asyncio.gather(*(self._traced_attempt(d, w) for d, w in claimed))
        return len(claimed)

    async def _traced_attempt(self, delivery: WebhookDelivery, webhook: Webhook) -> None:
        # a span in the trace of the event that caused the delivery
        with span_in_trace(
            "webhook delivery",
            delivery.trace_parent,
            event_id=delivery.event_id,
            webhook_id=webhook.id,
            delivery_id=delivery.id,
            order_id=delivery.order_id,
        ):
            await self._attempt(delivery, webhook)

    async def _claim_due(self) -> list[tuple[WebhookDelivery, Webhook]]:
        now = self._clock()
        claimed: list[tuple[WebhookDelivery, Webhook]] = []
        gave_up = 0
        async with self._uow_factory() as uow:
            for delivery in await uow.deliveries.due(now=now, limit=self._batch_size):
                if self._policy.exhausted(delivery.attempts):
                    await uow.deliveries.save(delivery.interrupted(now=now))
                    gave_up += 1
                    continue
                webhook = await uow.webhooks.get(delivery.webhook_id)
                if webhook is None:  # deleted with its deliveries; this row is going too
                    continue
                delivery = delivery.claimed(now=now, policy=self._policy)
                await uow.deliveries.save(delivery)
                claimed.append((delivery, webhook))
            await uow.commit()
        WEBHOOK_DELIVERIES.labels("gave_up").inc(gave_up)
        return claimed

    async def _attempt(self, delivery: WebhookDelivery, webhook: Webhook) -> None:
        try:
            outcome = await self._send(delivery, webhook)
        except Exception as error:
            # A bug or an unexpected library error must not kill the batch: count it as a
            # failed attempt, like any other.
            logger.opt(exception=error).warning("webhook send failed unexpectedly")
            outcome = HttpOutcome(0, f"{type(error).__name__}: {error}"[:500])
        async with self._uow_factory() as uow:
            current = await uow.deliveries.get(delivery.id, for_update=True)
            if (
                current is None  # its webhook was deleted meanwhile
                or current.status != DeliveryStatus.PENDING
                or current.attempts != delivery.attempts  # the lease ran out; another took it
            ):
                return
            now = self._clock()
            if outcome.succeeded:
                updated = current.succeeded(status_code=outcome.status_code, now=now)
            else:
                updated = current.failed(
                    status_code=outcome.status_code,
                    error=outcome.error,
                    now=now,
                    policy=self._policy,
                )
            await uow.deliveries.save(updated)
            await uow.commit()
        result = {
            DeliveryStatus.SUCCEEDED: "succeeded",
            DeliveryStatus.PENDING: "failed_attempt",
            DeliveryStatus.FAILED: "gave_up",
        }[updated.status]
        WEBHOOK_DELIVERIES.labels(result).inc()
        logger.info(
            "webhook delivery {result} (attempt {attempts}, status {status_code})",
            result=result,
            attempts=updated.attempts,
            status_code=updated.last_status_code,
            webhook_id=webhook.id,
            event_id=delivery.event_id,
        )

    async def _send(self, delivery: WebhookDelivery, webhook: Webhook) -> HttpOutcome:
        # Checked again on every attempt: the host's DNS may have changed since registration.
        try:
            address = await check_destination(
                url=webhook.url, resolver=self._resolver, allow_private=self._allow_private
            )
        except DestinationRefused as refused:
            return HttpOutcome(0, refused.message)
        timestamp = int(self._clock().timestamp())
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature(
                secret=webhook.secret,
                message_id=delivery.event_id,
                timestamp=timestamp,
                body=delivery.body,
            ),
        }
        return await self._sender.post(
            url=webhook.url, address=address, headers=headers, body=delivery.body
        )
