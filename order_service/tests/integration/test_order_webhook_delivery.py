"""Webhook deliveries end to end: order events on real Redis, the "webhooks" consumer group, the
delivery worker, and a real HTTP receiver on 127.0.0.1 that checks Standard Webhooks
signatures. Retries, restarts and crashed attempts lose nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from events.v1 import events_pb2
from order.v1 import order_pb2
from order_service.adapters.address_resolver import SystemAddressResolver
from order_service.adapters.webhook_delivery import HttpxWebhookSender
from order_service.bootstrap import MIGRATIONS_DIR
from order_service.domain.retry import RetryPolicy
from order_service.domain.webhooks import new_secret
from order_service.service_layer import webhooks
from order_service.service_layer.notification_unit_of_work import SqlNotificationUnitOfWork
from order_service.service_layer.webhook_worker import WebhookDeliveryWorker
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from standardwebhooks import Webhook as StandardWebhook
from tienda_platform.aio import cancel_and_wait
from tienda_platform.database import create_engine, is_sqlite, migrate, session_factory
from tienda_platform.ids import new_id
from tienda_platform.redis_server import free_port
from tienda_platform.testing import TokenMint, eventually

from ..unit.fakes import FakeProductCatalog
from ..unit.notification_fakes import person
from .running_notifications import RunningService, notification_settings, run_service
from .webhook_receiver import Received, WebhookReceiver

pytestmark = pytest.mark.integration

Sessions = async_sessionmaker[AsyncSession]
PENDING = order_pb2.WEBHOOK_DELIVERY_STATUS_PENDING
SUCCEEDED = order_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(free_port()).serving() as serving:
        yield serving


def status_changed(
    event_type: str, customer_id: str, order_id: str
) -> events_pb2.OrderStatusChanged:
    status = {"order.confirmed": "CONFIRMED", "order.cancelled": "CANCELLED"}[event_type]
    return events_pb2.OrderStatusChanged(
        order_id=order_id,
        customer_id=customer_id,
        status=f"ORDER_STATUS_{status}",
        reason="" if status == "CONFIRMED" else "payment declined",
        total_cents=2999,
    )


async def publish_status(
    service: RunningService, event_type: str, customer_id: str, order_id: str | None = None
) -> events_pb2.EventEnvelope:
    order_id = order_id or new_id()
    return await service.publish(
        event_type,
        f"orders/{order_id}",
        status_changed(event_type, customer_id, order_id),
        source="order_service",
    )


def verified(secret: str, request: Received) -> dict[str, object]:
    return StandardWebhook(secret).verify(request.body, request.headers)


async def test_a_delivery_is_signed_and_retried_until_the_receiver_answers_2xx(
    database_url: str, redis_url: str, token_mint: TokenMint, receiver: WebhookReceiver
) -> None:
    receiver.statuses = [500, 503]
    settings = notification_settings(
        database_url=database_url,
        redis_url=redis_url,
        delivery_retry_base_seconds=0.6,
        delivery_retry_max_seconds=0.6,
    )
    async with run_service(settings, mint=token_mint) as service:
        alice = new_id()
        hook = await service.create_webhook(alice, receiver.url(), "order.confirmed")
        envelope = await publish_status(service, "order.confirmed", alice)

        await eventually(lambda: len(receiver.received()) == 1)
        # Between attempts the log shows the failure and when the next attempt is due.
        await eventually(lambda: _attempts(service, hook, alice, 1))
        (pending,) = await service.deliveries(hook.id, alice)
        assert (pending.status, pending.last_status_code, pending.last_error) == (
            PENDING,
            500,
            "HTTP 500",
        )
        assert pending.HasField("next_attempt_time")
        assert pending.next_attempt_time.ToDatetime() >= pending.update_time.ToDatetime()

        await eventually(lambda: _succeeded(service, hook, alice), within=20)
        (done,) = await service.deliveries(hook.id, alice)
        assert (done.status, done.attempts, done.last_status_code, done.last_error) == (
            SUCCEEDED,
            3,
            200,
            "",
        )
        assert not done.HasField("next_attempt_time")
        assert done.event_id == envelope.id and done.event_type == "order.confirmed"

    requests = receiver.received()
    assert len(requests) == 3
    assert {r.headers["webhook-id"] for r in requests} == {envelope.id}
    assert len({r.body for r in requests}) == 1  # the same bytes on every attempt
    body = verified(hook.secret, requests[-1])
    assert body["type"] == "order.confirmed"
    assert body["data"] == {
        "order_id": envelope.subject.removeprefix("orders/"),
        "customer_id": alice,
        "status": "ORDER_STATUS_CONFIRMED",
        "reason": "",
        "total_cents": "2999",
        "saga_mode": "",
    }
    with pytest.raises(Exception, match="signature"):
        StandardWebhook(new_secret()).verify(requests[-1].body, requests[-1].headers)


async def _attempts(service: RunningService, hook: order_pb2.Webhook, owner: str, n: int) -> bool:
    """n attempts made and the outcome of the last one recorded (an attempt counts from the
    moment it is claimed, before its outcome is known)."""
    deliveries = await service.deliveries(hook.id, owner)
    return (
        bool(deliveries)
        and deliveries[0].attempts == n
        and deliveries[0].status == PENDING
        and bool(deliveries[0].last_error)
    )


async def _succeeded(service: RunningService, hook: order_pb2.Webhook, owner: str) -> bool:
    deliveries = await service.deliveries(hook.id, owner)
    return bool(deliveries) and deliveries[0].status == SUCCEEDED


async def test_customers_hear_of_their_own_orders_and_admins_of_all(
    database_url: str, redis_url: str, token_mint: TokenMint, receiver: WebhookReceiver
) -> None:
    settings = notification_settings(database_url=database_url, redis_url=redis_url)
    async with run_service(settings, mint=token_mint) as service:
        alice, bob, admin = new_id(), new_id(), new_id()
        alices = await service.create_webhook(alice, receiver.url("/alice"), "order.confirmed")
        admins = await service.create_webhook(
            admin, receiver.url("/admin"), "order.confirmed", "order.cancelled", role="admin"
        )
        bobs_order = await publish_status(service, "order.confirmed", bob)
        alices_order = await publish_status(service, "order.cancelled", alice)

        await eventually(lambda: _succeeded(service, admins, admin))
        await eventually(lambda: len(receiver.received()) == 2)
        admin_log = await service.deliveries(admins.id, admin, "admin")
        assert {d.event_id for d in admin_log} == {bobs_order.id, alices_order.id}
        # Alice's webhook wants order.confirmed, and the only confirmed order is Bob's.
        assert await service.deliveries(alices.id, alice) == []
        for request in receiver.received():
            verified(admins.secret, request)


async def test_a_restarted_service_delivers_what_was_pending(
    database_url: str, redis_url: str, token_mint: TokenMint
) -> None:
    down = WebhookReceiver(free_port())  # nothing listens on its port yet
    settings = notification_settings(
        database_url=database_url,
        redis_url=redis_url,
        delivery_retry_base_seconds=0.3,
        delivery_retry_max_seconds=0.3,
    )
    alice = new_id()
    async with run_service(settings, mint=token_mint) as first:
        hook = await first.create_webhook(alice, down.url(), "order.confirmed")
        envelope = await publish_status(first, "order.confirmed", alice)
        await eventually(lambda: _attempts(first, hook, alice, 1))
        (failed,) = await first.deliveries(hook.id, alice)
        assert failed.last_status_code == 0 and "ConnectError" in failed.last_error

    with down.serving():
        async with run_service(settings, mint=token_mint) as second:
            await eventually(lambda: _succeeded(second, hook, alice), within=20)
        (request,) = down.received()
    assert verified(hook.secret, request)["type"] == "order.confirmed"
    assert request.headers["webhook-id"] == envelope.id


async def test_an_attempt_cut_short_by_a_crash_is_made_again_after_its_lease(
    database_url: str,
) -> None:
    await migrate(MIGRATIONS_DIR, database_url)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    sender = HttpxWebhookSender(timeout=30)

    def worker() -> WebhookDeliveryWorker:
        return WebhookDeliveryWorker(
            uow_factory=lambda: SqlNotificationUnitOfWork(
                sessions, skip_locked=not is_sqlite(database_url)
            ),
            sender=sender,
            resolver=SystemAddressResolver(),
            allow_private=True,
            policy=RetryPolicy(
                max_attempts=5,
                base_delay=timedelta(seconds=0.1),
                max_delay=timedelta(seconds=0.1),
                lease=timedelta(seconds=1),
            ),
            idle_seconds=0.05,
        )

    receiver = WebhookReceiver(free_port())
    receiver.hold.clear()  # the first request hangs until the crash
    try:
        with receiver.serving():
            hook_id = await _webhook_with_one_delivery(sessions, receiver.url())
            crashing = asyncio.create_task(worker().run())
            await eventually(lambda: len(receiver.received()) == 1)
            # the process dies mid-attempt; its claim stays behind
            await cancel_and_wait([crashing])
            receiver.hold.set()

            restarted = asyncio.create_task(worker().run())
            try:
                await eventually(lambda: _delivered(sessions, hook_id), within=15)
            finally:
                await cancel_and_wait([restarted])
        first, second = receiver.received()
        assert first.headers["webhook-id"] == second.headers["webhook-id"]
        async with SqlNotificationUnitOfWork(sessions, skip_locked=False) as uow:
            (delivery,) = await uow.deliveries.list_newest_first(
                webhook_id=hook_id, before_id=None, limit=5
            )
        assert delivery.attempts == 2
    finally:
        await sender.close()
        await engine.dispose()


async def _webhook_with_one_delivery(sessions: Sessions, url: str) -> str:
    hook = await webhooks.create_webhook(
        url=url,
        event_types=["order.created"],
        principal=person("alice"),
        uow=SqlNotificationUnitOfWork(sessions, skip_locked=False),
        resolver=SystemAddressResolver(),
        allow_private=True,
    )
    async with SqlNotificationUnitOfWork(sessions, skip_locked=False) as uow:
        now = datetime.now(UTC)
        await webhooks.record_deliveries(
            event=webhooks.OrderEvent(
                event_id=new_id(),
                event_type="order.created",
                customer_id="alice",
                time=now,
                data={"order_id": "o-1"},
            ),
            webhooks=uow.webhooks,
            deliveries=uow.deliveries,
            now=now,
        )
        await uow.commit()
    return hook.id


async def _delivered(sessions: Sessions, hook_id: str) -> bool:
    async with SqlNotificationUnitOfWork(sessions, skip_locked=False) as uow:
        deliveries = await uow.deliveries.list_newest_first(
            webhook_id=hook_id, before_id=None, limit=5
        )
    return bool(deliveries) and deliveries[0].status.value == "SUCCEEDED"


async def test_a_placed_order_reaches_the_webhook_as_created_then_confirmed(
    database_url: str, redis_url: str, token_mint: TokenMint, receiver: WebhookReceiver
) -> None:
    catalog = FakeProductCatalog()
    mug = new_id()
    catalog.add(mug, name="Mug", price_cents=1250, stock=10)
    settings = notification_settings(database_url=database_url, redis_url=redis_url)
    async with run_service(settings, mint=token_mint, catalog=catalog) as service:
        alice = new_id()
        hook = await service.create_webhook(
            alice, receiver.url(), "order.created", "order.confirmed"
        )
        order = await service.stub.CreateOrder(
            order_pb2.CreateOrderRequest(
                items=[order_pb2.OrderItemRequest(product_id=mug, quantity=2)],
                payment_token="tok_ok",
            ),
            metadata=service.auth(alice),
        )
        await eventually(lambda: len(receiver.received()) == 2, within=20)
    bodies = {
        body["type"]: body["data"]
        for body in (verified(hook.secret, r) for r in receiver.received())
    }
    assert set(bodies) == {"order.created", "order.confirmed"}
    created = bodies["order.created"]
    assert isinstance(created, dict)
    assert (created["order_id"], created["customer_id"], created["total_cents"]) == (
        order.id,
        alice,
        "2500",
    )
    assert json.dumps(created["lines"]) and created["lines"][0]["product_name"] == "Mug"
