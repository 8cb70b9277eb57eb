"""Subscribers of the notification groups: each turns an event into a service-layer call inside
the consumer's transaction (which also records the event as processed).

Three consumer groups, exactly as tienda_contracts.topology declares them:
- "webhooks": one delivery row per interested webhook (order.*);
- "notifications": welcome emails (user.registered), emails on terminal order states;
- "registration_counter": the registration_stats counter and tienda_registrations_total.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf import json_format
from google.protobuf.message import Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import subscriptions_of
from tienda_platform.consumers import EventConsumer, Handler
from tienda_platform.events import EventEnvelope

from order_service.adapters.customer_contacts import SqlCustomerContacts
from order_service.adapters.notification_repository import (
    EMAILS_ADDED,
    SqlEmailRepository,
    SqlRegistrationCounter,
)
from order_service.adapters.webhook_repository import (
    DELIVERIES_ADDED,
    SqlDeliveryRepository,
    SqlWebhookRepository,
)
from order_service.service_layer import notifications, webhooks

WEBHOOKS_GROUP = "webhooks"
NOTIFICATIONS_GROUP = "notifications"
REGISTRATION_COUNTER_GROUP = "registration_counter"
GROUPS = (WEBHOOKS_GROUP, NOTIFICATIONS_GROUP, REGISTRATION_COUNTER_GROUP)


def _now() -> datetime:
    return datetime.now(UTC)


async def _order_event(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.OrderCreated | events_pb2.OrderStatusChanged)
    await webhooks.record_deliveries(
        event=webhooks.OrderEvent(
            event_id=envelope.id,
            event_type=envelope.type,
            customer_id=payload.customer_id,
            time=envelope.time.ToDatetime(tzinfo=UTC),
            # The JSON the gateway uses too: proto field names, every field present.
            data=json_format.MessageToDict(
                payload, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
            ),
        ),
        webhooks=SqlWebhookRepository(session),
        deliveries=SqlDeliveryRepository(session, skip_locked=False),
        now=_now(),
    )


async def _welcome(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.UserRegistered)
    await notifications.queue_welcome_email(
        emails=SqlEmailRepository(session, skip_locked=False),
        event_id=envelope.id,
        user_id=payload.user_id,
        recipient=payload.email,
        full_name=payload.full_name,
        now=_now(),
    )


async def _order_ended(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.OrderStatusChanged)
    await notifications.queue_order_email(
        emails=SqlEmailRepository(session, skip_locked=False),
        contacts=SqlCustomerContacts(session),
        event_id=envelope.id,
        event_type=envelope.type,
        order_id=payload.order_id,
        customer_id=payload.customer_id,
        reason=payload.reason,
        total_cents=payload.total_cents,
        now=_now(),
    )


# what each group queues for a worker to send, as the session.info key that says it did
_QUEUES = {WEBHOOKS_GROUP: DELIVERIES_ADDED, NOTIFICATIONS_GROUP: EMAILS_ADDED}


def _queued(key: str) -> Callable[[AsyncSession], bool]:
    """Whether a handler's transaction queued work under key (and forget it): most order
    events reach no webhook, and waking the delivery worker for nothing costs it a claim."""

    def queued(session: AsyncSession) -> bool:
        return bool(session.info.pop(key, False))

    return queued


def _emails_off(_payload: Message) -> bool:
    """No email is queued while emails are off (no SMTP_HOST); the group still reads and
    acknowledges the events, so turning emails on later does not send a backlog of stale
    ones."""
    return False


async def _registered(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    await notifications.count_registration(counter=SqlRegistrationCounter(session), now=_now())

    def counted(_session: object) -> None:
        notifications.REGISTRATIONS.inc()

    # The metric follows the stored counter: only a committed registration counts.
    event.listen(session.sync_session, "after_commit", counted, once=True)


def _handlers() -> Mapping[str, Mapping[str, Handler]]:
    return {
        WEBHOOKS_GROUP: {
            "order.created": _order_event,
            "order.confirmed": _order_event,
            "order.cancelled": _order_event,
            "order.rejected": _order_event,
        },
        NOTIFICATIONS_GROUP: {
            "user.registered": _welcome,
            "order.confirmed": _order_ended,
            "order.cancelled": _order_ended,
            "order.rejected": _order_ended,
        },
        REGISTRATION_COUNTER_GROUP: {"user.registered": _registered},
    }


def build_notification_consumer(
    group: str,
    *,
    broker: RedisBroker,
    engine: AsyncEngine,
    consumer: str,
    emails_enabled: bool,
    after_commit: Callable[[], None] | None = None,
    claim_idle_ms: int = 10_000,
) -> EventConsumer:
    """The consumer of one notification group, reading what the topology says it reads.

    after_commit runs after a handler's commit that queued what it is for: a webhook
    delivery (the webhooks group) or an email (the notifications group)."""
    handlers = _handlers()[group]
    when = None if emails_enabled or group != NOTIFICATIONS_GROUP else _emails_off
    event_consumer = EventConsumer(
        broker=broker,
        engine=engine,
        group=group,
        consumer=consumer,
        after_commit=after_commit,
        wake_when=_queued(_QUEUES[group]) if group in _QUEUES else None,
        claim_idle_ms=claim_idle_ms,
    )
    for subscription in subscriptions_of(group):
        for event_type in subscription.event_types:
            event_consumer.on(subscription.stream, event_type, handlers[event_type], when=when)
    return event_consumer
