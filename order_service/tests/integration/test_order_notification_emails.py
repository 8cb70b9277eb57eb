"""Notifications on real Redis, a real database and a real SMTP server (aiosmtpd): welcome and
order emails, the fan-out of one event to several consumer groups, and two replicas of one
group sharing its events."""

from __future__ import annotations

from collections.abc import Awaitable, Iterator

import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from order_service.adapters.address_resolver import SystemAddressResolver
from order_service.adapters.notification_repository import SqlRegistrationCounter
from order_service.entrypoints.notification_consumers import build_notification_consumer
from order_service.service_layer import webhooks
from order_service.service_layer.notification_unit_of_work import SqlNotificationUnitOfWork
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS, ORDER_EVENTS
from tienda_platform.consumers import Handler
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope, build_envelope
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint, events_consumed, eventually

from ..unit.notification_fakes import person
from .running_notifications import RunningService, notification_settings, run_service
from .smtp_sink import SmtpSink

pytestmark = pytest.mark.integration


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink().serving() as sink:
        yield sink


def registered(user_id: str, email: str, name: str) -> events_pb2.UserRegistered:
    return events_pb2.UserRegistered(user_id=user_id, email=email, full_name=name)


async def register(service: RunningService, email: str, name: str = "Ana") -> EventEnvelope:
    user_id = new_id()
    return await service.publish(
        "user.registered", f"users/{user_id}", registered(user_id, email, name), source="auth"
    )


async def scalar(engine: AsyncEngine, sql: str, **params: object) -> object:
    async with engine.connect() as connection:
        return (await connection.execute(sa.text(sql), params)).scalar()


async def groups_that_handled(engine: AsyncEngine, event_id: str) -> set[str]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            sa.text("SELECT consumer_group FROM processed_events WHERE event_id = :e"),
            {"e": event_id},
        )
        return {row[0] for row in rows}


def registrations_metric() -> float:
    return REGISTRY.get_sample_value("tienda_registrations_total") or 0.0


async def test_one_registration_reaches_every_group_that_subscribes_once(
    database_url: str, redis_url: str, token_mint: TokenMint, smtp: SmtpSink
) -> None:
    settings = notification_settings(
        database_url=database_url, redis_url=redis_url, smtp_host="127.0.0.1", smtp_port=smtp.port
    )
    counted_before = registrations_metric()
    async with run_service(settings, mint=token_mint) as service:
        envelope = await register(service, "ana@example.com", "Ana")
        wanted = {"notifications", "registration_counter", "order_service", "order_read_model"}
        await eventually(
            lambda: _superset(groups_that_handled(service.engine, envelope.id), wanted)
        )
        await eventually(lambda: len(smtp.messages("ana@example.com")) == 1)
        (welcome,) = smtp.messages("ana@example.com")
        assert welcome["Subject"] == "Welcome to tienda"
        assert welcome["From"] == settings.smtp_from
        assert "Hello Ana" in welcome.get_payload()
        stored = await scalar(
            service.engine, "SELECT value FROM registration_stats WHERE name = 'registrations'"
        )
        assert stored == 1
        assert registrations_metric() == counted_before + 1
        # Published once: one entry in the stream, read by every group.
        client = redis.Redis.from_url(redis_url)
        try:
            assert await client.xlen(AUTH_EVENTS) == 1
        finally:
            await client.aclose()


async def _superset(found: Awaitable[set[str]], wanted: set[str]) -> bool:
    return wanted <= await found


async def test_terminal_order_states_email_the_customer_once_each(
    database_url: str, redis_url: str, token_mint: TokenMint, smtp: SmtpSink
) -> None:
    settings = notification_settings(
        database_url=database_url, redis_url=redis_url, smtp_host="127.0.0.1", smtp_port=smtp.port
    )
    async with run_service(settings, mint=token_mint) as service:
        signup = await register(service, "bea@example.com", "Bea")
        bea = signup.subject.removeprefix("users/")
        # The customer snapshot (order_service group) must know Bea before her orders end.
        await eventually(
            lambda: _superset(groups_that_handled(service.engine, signup.id), {"order_service"})
        )
        ends = {
            "order.confirmed": ("ORDER_STATUS_CONFIRMED", ""),
            "order.cancelled": ("ORDER_STATUS_CANCELLED", "payment declined"),
            "order.rejected": ("ORDER_STATUS_REJECTED", "insufficient stock for Mug"),
        }
        published: dict[str, EventEnvelope] = {}
        for event_type, (status, reason) in ends.items():
            order_id = new_id()
            published[event_type] = await service.publish(
                event_type,
                f"orders/{order_id}",
                events_pb2.OrderStatusChanged(
                    order_id=order_id,
                    customer_id=bea,
                    status=status,
                    reason=reason,
                    total_cents=1250,
                ),
                source="order_service",
            )
        await service.republish(published["order.confirmed"])  # redelivered: no second email
        await eventually(lambda: caught_up(redis_url, ORDER_EVENTS, "notifications", entries=4))
        await eventually(lambda: len(smtp.messages("bea@example.com")) == 4)
        sent = await scalar(service.engine, "SELECT count(*) FROM outgoing_emails")
        assert sent == 4
        await eventually(lambda: _all_sent(service.engine))
    subjects = sorted(m["Subject"] for m in smtp.messages("bea@example.com"))
    assert len(subjects) == 4
    assert subjects[0] == "Welcome to tienda"
    assert sorted(s.rsplit(" ", 1)[-1] for s in subjects[1:]) == [
        "cancelled",
        "confirmed",
        "rejected",
    ]
    bodies = [m.get_payload() for m in smtp.messages("bea@example.com")]
    assert any("Reason: insufficient stock for Mug" in body for body in bodies)


async def caught_up(redis_url: str, stream: str, group: str, *, entries: int) -> bool:
    """The group has read all `entries` entries of the stream and acknowledged them."""
    client = redis.Redis.from_url(redis_url)
    try:
        info = await client.xinfo_stream(stream)
        found = [g for g in await client.xinfo_groups(stream) if g["name"] == group.encode()]
    finally:
        await client.aclose()
    return (
        info["length"] == entries
        and bool(found)
        and found[0]["pending"] == 0
        and found[0]["last-delivered-id"] == info["last-generated-id"]
    )


async def _all_sent(engine: AsyncEngine) -> bool:
    return await scalar(engine, "SELECT count(*) FROM outgoing_emails WHERE status <> 'SENT'") == 0


async def test_without_an_smtp_host_events_are_consumed_and_no_email_is_queued(
    database_url: str, redis_url: str, token_mint: TokenMint
) -> None:
    """Acknowledged as ignored: no email, and no transaction (no processed-event record)."""
    settings = notification_settings(database_url=database_url, redis_url=redis_url)
    assert settings.smtp_host == ""

    def ignored() -> float:
        return events_consumed(AUTH_EVENTS, "notifications", "user.registered", "ignored")

    before = ignored()
    async with run_service(settings, mint=token_mint) as service:
        envelope = await register(service, "cid@example.com")
        await eventually(lambda: ignored() == before + 1)
        # the other groups handle it as usual (in their own transactions)
        await eventually(
            lambda: _superset(
                groups_that_handled(service.engine, envelope.id), {"registration_counter"}
            )
        )
        client = redis.Redis.from_url(redis_url)
        try:
            pending = await client.xpending(AUTH_EVENTS, "notifications")
        finally:
            await client.aclose()
        assert pending["pending"] == 0
        assert "notifications" not in await groups_that_handled(service.engine, envelope.id)
        assert await scalar(service.engine, "SELECT count(*) FROM outgoing_emails") == 0


async def test_two_replicas_of_a_group_split_the_events_and_count_each_once(
    engine: AsyncEngine, redis_url: str
) -> None:
    handled: dict[str, list[str]] = {"replica-a": [], "replica-b": []}
    replicas = []
    for name in handled:
        consumer = build_notification_consumer(
            "registration_counter",
            broker=RedisBroker(redis_url),
            engine=engine,
            consumer=name,
            emails_enabled=False,
        )
        count = consumer.handlers[AUTH_EVENTS]["user.registered"]

        async def counting(
            session: AsyncSession,
            envelope: EventEnvelope,
            payload: Message,
            count: Handler = count,
            name: str = name,
        ) -> None:
            await count(session, envelope, payload)
            handled[name].append(envelope.id)

        consumer.handlers[AUTH_EVENTS]["user.registered"] = counting
        await consumer.declare()
        await consumer.broker.start()
        replicas.append(consumer)
    publisher = RedisBroker(redis_url)
    await publisher.connect()
    try:
        published = []
        for n in range(30):
            envelope = build_envelope(
                event_type="user.registered",
                source="auth_service",
                subject=f"users/u{n}",
                payload=registered(f"u{n}", f"u{n}@example.com", "U"),
            )
            published.append(envelope.id)
            await publisher.publish(envelope.SerializeToString(), stream=AUTH_EVENTS)
            # One at a time: each entry goes to whichever replica is waiting for the next.
            await eventually(lambda n=n: sum(map(len, handled.values())) == n + 1)
        async with session_factory(engine)() as session:
            assert await SqlRegistrationCounter(session).value() == 30
        both = handled["replica-a"] + handled["replica-b"]
        assert sorted(both) == sorted(published)  # each event handled once, by one replica
        assert handled["replica-a"] and handled["replica-b"]
    finally:
        await publisher.stop()
        for replica in replicas:
            await replica.broker.stop()


async def test_a_group_wakes_its_worker_only_after_a_handler_queued_work_for_it(
    engine: AsyncEngine, redis_url: str
) -> None:
    woken = {"webhooks": 0, "notifications": 0}

    def wake(group: str) -> None:
        woken[group] += 1

    consumers = {
        group: build_notification_consumer(
            group,
            broker=RedisBroker(redis_url),
            engine=engine,
            consumer="c",
            emails_enabled=True,
            after_commit=lambda group=group: wake(group),
        )
        for group in woken
    }

    async def handle(group: str, stream: str, event_type: str, payload: Message) -> None:
        envelope = build_envelope(
            event_type=event_type, source="test", subject="s/1", payload=payload
        )
        await consumers[group].handle(stream, envelope.SerializeToString(), b"1-0")

    def created(customer_id: str) -> events_pb2.OrderCreated:
        return events_pb2.OrderCreated(order_id=new_id(), customer_id=customer_id)

    # no webhook receives alice's orders: handled, nothing queued, the worker sleeps on
    await handle("webhooks", ORDER_EVENTS, "order.created", created("alice"))
    assert woken == {"webhooks": 0, "notifications": 0}

    await webhooks.create_webhook(
        url="http://127.0.0.1:9/hook",
        event_types=["order.created"],
        principal=person("alice"),
        uow=SqlNotificationUnitOfWork(session_factory(engine), skip_locked=False),
        resolver=SystemAddressResolver(),
        allow_private=True,
    )
    await handle("webhooks", ORDER_EVENTS, "order.created", created("alice"))
    assert woken == {"webhooks": 1, "notifications": 0}

    # a welcome email queued
    user = registered(new_id(), "ana@example.com", "Ana")
    await handle("notifications", AUTH_EVENTS, "user.registered", user)
    assert woken == {"webhooks": 1, "notifications": 1}
