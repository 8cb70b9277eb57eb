"""Wires webhooks and notifications into an OrderApp: their consumer groups, the webhook
delivery and email workers, and the webhook RPCs' dependencies. Called by bootstrap()."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from faststream.redis import RedisBroker
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.database import is_sqlite, session_factory

from order_service.adapters.address_resolver import SystemAddressResolver
from order_service.adapters.smtp import SmtpMailer
from order_service.adapters.webhook_delivery import HttpxWebhookSender
from order_service.domain.retry import RetryPolicy
from order_service.entrypoints.notification_consumers import (
    GROUPS,
    NOTIFICATIONS_GROUP,
    WEBHOOKS_GROUP,
    build_notification_consumer,
)
from order_service.entrypoints.webhook_rpcs import WebhookDependencies
from order_service.service_layer.email_worker import EmailWorker
from order_service.service_layer.notification_unit_of_work import (
    AbstractNotificationUnitOfWork,
    SqlNotificationUnitOfWork,
)
from order_service.service_layer.webhook_worker import WebhookDeliveryWorker

if TYPE_CHECKING:
    from order_service.bootstrap import OrderApp

# Beyond the request timeout: DNS (bounded at 5 s) and storing the outcome.
_LEASE_MARGIN = timedelta(seconds=30)
_SMTP_TIMEOUT_SECONDS = 10.0


def wire_notifications(
    app: OrderApp, *, engine: AsyncEngine, broker: RedisBroker, consumer: str
) -> None:
    """Add the webhooks, notifications and registration_counter groups and their workers."""
    settings = app.settings
    sessions = session_factory(engine)
    skip_locked = not is_sqlite(settings.database_url)

    def uow_factory() -> AbstractNotificationUnitOfWork:
        return SqlNotificationUnitOfWork(sessions, skip_locked=skip_locked)

    resolver = SystemAddressResolver()
    sender = HttpxWebhookSender(timeout=settings.webhook_timeout_seconds)
    webhook_worker = WebhookDeliveryWorker(
        uow_factory=uow_factory,
        sender=sender,
        resolver=resolver,
        allow_private=settings.webhook_allow_private,
        policy=RetryPolicy(
            max_attempts=settings.webhook_max_attempts,
            base_delay=timedelta(seconds=settings.delivery_retry_base_seconds),
            max_delay=timedelta(seconds=settings.delivery_retry_max_seconds),
            lease=timedelta(seconds=settings.webhook_timeout_seconds) + _LEASE_MARGIN,
        ),
    )
    app.deps = replace(
        app.deps,
        webhooks=WebhookDependencies(
            uow_factory=uow_factory,
            resolver=resolver,
            allow_private=settings.webhook_allow_private,
        ),
    )
    emails_enabled = bool(settings.smtp_host)
    email_worker: EmailWorker | None = None
    if emails_enabled:
        email_worker = EmailWorker(
            uow_factory=uow_factory,
            mailer=SmtpMailer(
                host=settings.smtp_host,
                port=settings.smtp_port,
                sender=settings.smtp_from,
                timeout=_SMTP_TIMEOUT_SECONDS,
            ),
            policy=RetryPolicy(
                max_attempts=settings.email_max_attempts,
                base_delay=timedelta(seconds=settings.delivery_retry_base_seconds),
                max_delay=timedelta(seconds=settings.delivery_retry_max_seconds),
                lease=timedelta(seconds=_SMTP_TIMEOUT_SECONDS) + _LEASE_MARGIN,
            ),
        )
        app.background.append(email_worker.run)
    else:
        logger.info("SMTP_HOST is empty: emails are off (their events are consumed unsent)")
    wake = {
        WEBHOOKS_GROUP: webhook_worker.notify,
        NOTIFICATIONS_GROUP: email_worker.notify if email_worker is not None else None,
    }
    app.consumers += [
        build_notification_consumer(
            group,
            broker=broker,
            engine=engine,
            consumer=consumer,
            emails_enabled=emails_enabled,
            after_commit=wake.get(group),
        )
        for group in GROUPS
    ]
    app.background.append(webhook_worker.run)
    app.closers.append(sender.close)
