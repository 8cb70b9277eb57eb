"""Transactions about one customer or one order at once, as replicas run them, on SQLite and
PostgreSQL: an order placed while its customer is being deleted is refused or cancelled,
whichever comes first; of two user events handled at once the newer wins, and of two status
events of one order the higher-ranked stays; a webhook deleted while a delivery is being
recorded for it goes with that delivery.

Each test stops one transaction just before its commit and starts the other: the other must
wait for it (a bounded wait shows it does), and what it does next depends on what it then sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from order_service.domain.commands import CreateOrder, RequestedItem
from order_service.domain.customers import Customer
from order_service.domain.model import CUSTOMER_DELETED, Order, OrderStatus, SagaMode
from order_service.domain.webhooks import Webhook, WebhookDelivery, new_secret
from order_service.service_layer import customers, read_model, services, webhooks
from order_service.service_layer.notification_unit_of_work import SqlNotificationUnitOfWork
from order_service.service_layer.ports import ProductCatalog, ProductSnapshot, Reservation
from order_service.service_layer.unit_of_work import SqlUnitOfWork
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform import testing
from tienda_platform.auth import ROLE_CUSTOMER, Principal
from tienda_platform.database import session_factory
from tienda_platform.errors import FailedPrecondition
from tienda_platform.ids import new_id

pytestmark = pytest.mark.integration

UowFactory = Callable[[], SqlUnitOfWork]
T0 = datetime(2026, 6, 1, tzinfo=UTC)
PRODUCT = ProductSnapshot(id=new_id(), name="Mug", price_cents=1200)
# long enough for a transaction that does not wait to finish; the waits below are bounded
NOT_WAITING = 1.0


class OneProduct(ProductCatalog):
    async def batch_get_products(
        self, *, ids: Sequence[str], principal: Principal
    ) -> list[ProductSnapshot]:
        return [PRODUCT]

    async def reserve_stock(self, *, order_id: str, lines: Sequence[object]) -> Reservation:
        raise AssertionError("not called: no saga runs here")

    async def release_stock(self, *, order_id: str) -> None:
        raise AssertionError("not called: no saga runs here")

    async def commit_reservation(self, *, order_id: str) -> None:
        raise AssertionError("not called: no saga runs here")


class HeldAtCommit(testing.HeldAtCommit, SqlUnitOfWork):
    """A unit of work that stops before its commit, its statements sent, until released."""


async def known_customer(uow_factory: UowFactory) -> Principal:
    principal = Principal(user_id=new_id(), role=ROLE_CUSTOMER, token="t")
    async with uow_factory() as uow:
        await uow.customers.save(Customer(principal.user_id, "c@x.io", "Cleo", False, T0))
        await uow.commit()
    return principal


def place(principal: Principal, uow: SqlUnitOfWork, request_id: str = "") -> asyncio.Task[Order]:
    return asyncio.create_task(
        services.create_order(
            command=CreateOrder(
                items=(RequestedItem(PRODUCT.id, 1),), payment_token="tok_ok", request_id=request_id
            ),
            principal=principal,
            uow=uow,
            catalog=OneProduct(),
            saga_mode=SagaMode.CHOREOGRAPHY,
        )
    )


def delete(principal: Principal, uow: SqlUnitOfWork) -> asyncio.Task[None]:
    return asyncio.create_task(
        customers.customer_deleted(uow=uow, customer_id=principal.user_id, event_time=T0)
    )


async def waits(task: asyncio.Task[Any]) -> bool:
    done, _ = await asyncio.wait({task}, timeout=NOT_WAITING)
    return not done


async def test_a_deletion_during_an_order_waits_for_it_and_cancels_it(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    principal = await known_customer(uow_factory)
    placing = HeldAtCommit(session_factory(engine))
    order_task = place(principal, placing)
    await asyncio.wait_for(placing.reached.wait(), 10)

    deletion = delete(principal, uow_factory())
    assert await waits(deletion), "the deletion did not wait for the order being placed"
    placing.release.set()
    order = await asyncio.wait_for(order_task, 10)
    await asyncio.wait_for(deletion, 10)

    async with uow_factory() as uow:
        stored = await uow.orders.get(order.id)
    assert stored is not None
    assert (stored.status, stored.status_reason) == (OrderStatus.CANCELLED, CUSTOMER_DELETED)


async def test_an_order_during_a_deletion_waits_for_it_and_is_refused(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    principal = await known_customer(uow_factory)
    deleting = HeldAtCommit(session_factory(engine))
    deletion = delete(principal, deleting)
    await asyncio.wait_for(deleting.reached.wait(), 10)

    order_task = place(principal, uow_factory())
    assert await waits(order_task), "the order did not wait for the deletion under way"
    deleting.release.set()
    await asyncio.wait_for(deletion, 10)
    with pytest.raises(FailedPrecondition, match="deleted"):
        await asyncio.wait_for(order_task, 10)

    async with uow_factory() as uow:
        assert await uow.orders.pending_of(principal.user_id) == []


async def test_the_same_request_placed_twice_at_once_places_one_order(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    """The second waits for the first (SQLite: for the write lock; PostgreSQL: on the
    request's key, inserted but not committed), then answers with the first one's order."""
    principal = await known_customer(uow_factory)
    placing = HeldAtCommit(session_factory(engine))
    first = place(principal, placing, request_id="req-1")
    await asyncio.wait_for(placing.reached.wait(), 10)

    second = place(principal, uow_factory(), request_id="req-1")
    assert await waits(second), "the second did not wait for the first"
    placing.release.set()
    placed = await asyncio.wait_for(first, 10)
    assert (await asyncio.wait_for(second, 10)).id == placed.id

    async with uow_factory() as uow:
        assert [o.id for o in await uow.orders.pending_of(principal.user_id)] == [placed.id]


async def write_model_name(uow: SqlUnitOfWork, customer_id: str) -> str | None:
    customer = await uow.customers.get(customer_id)
    return customer.full_name if customer is not None else None


async def read_model_name(uow: SqlUnitOfWork, customer_id: str) -> str | None:
    customer = await uow.summaries.get_customer(customer_id)
    return customer.full_name if customer is not None else None


def write_model_rename(
    customer_id: str, uow: SqlUnitOfWork, name: str, at: datetime
) -> Coroutine[Any, Any, None]:
    return customers.customer_changed(
        uow=uow, customer_id=customer_id, email="c@x.io", full_name=name, event_time=at
    )


def read_model_rename(
    customer_id: str, uow: SqlUnitOfWork, name: str, at: datetime
) -> Coroutine[Any, Any, None]:
    return read_model.customer_named(
        uow=uow, customer_id=customer_id, full_name=name, event_time=at
    )


@pytest.mark.parametrize(
    ("rename", "name_of"),
    [(write_model_rename, write_model_name), (read_model_rename, read_model_name)],
    ids=["customer snapshot", "read model"],
)
async def test_of_two_user_events_handled_at_once_the_newer_wins(
    uow_factory: UowFactory,
    engine: AsyncEngine,
    rename: Callable[..., Coroutine[Any, Any, None]],
    name_of: Callable[[SqlUnitOfWork, str], Coroutine[Any, Any, str | None]],
) -> None:
    """Two replicas of the group: the newer event's transaction is about to commit when the
    older one starts; the older waits, then reads the newer name and leaves it."""
    customer_id = new_id()
    await rename(customer_id, uow_factory(), "Cleo", T0)
    newer = HeldAtCommit(session_factory(engine))
    newer_task = asyncio.create_task(
        rename(customer_id, newer, "Cleo Newer", T0 + timedelta(seconds=2))
    )
    await asyncio.wait_for(newer.reached.wait(), 10)

    older_task = asyncio.create_task(
        rename(customer_id, uow_factory(), "Cleo Older", T0 + timedelta(seconds=1))
    )
    assert await waits(older_task), "the older event did not wait for the newer one"
    newer.release.set()
    await asyncio.wait_for(asyncio.gather(newer_task, older_task), 10)

    async with uow_factory() as uow:
        assert await name_of(uow, customer_id) == "Cleo Newer"


def status_event(
    order_id: str, uow: SqlUnitOfWork, status: OrderStatus, at: datetime
) -> Coroutine[Any, Any, None]:
    return read_model.order_status_changed(
        uow=uow,
        order_id=order_id,
        customer_id="c",
        status=status,
        reason="cancelled by customer" if status is OrderStatus.CANCELLED else "",
        total_cents=1200,
        event_time=at,
    )


async def test_of_two_status_events_handled_at_once_the_higher_ranked_stays(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    """Two replicas of the read model's group: order.cancelled is about to commit when the
    late order.confirmed starts; the confirmation waits, sees the cancellation and leaves it."""
    order_id = new_id()
    await read_model.order_created(
        uow=uow_factory(),
        order_id=order_id,
        customer_id="c",
        lines=[],
        total_cents=1200,
        event_time=T0,
    )
    cancelling = HeldAtCommit(session_factory(engine))
    cancelled = asyncio.create_task(
        status_event(order_id, cancelling, OrderStatus.CANCELLED, T0 + timedelta(seconds=2))
    )
    await asyncio.wait_for(cancelling.reached.wait(), 10)

    confirmed = asyncio.create_task(
        status_event(order_id, uow_factory(), OrderStatus.CONFIRMED, T0 + timedelta(seconds=1))
    )
    assert await waits(confirmed), "the confirmation did not wait for the cancellation"
    cancelling.release.set()
    await asyncio.wait_for(asyncio.gather(cancelled, confirmed), 10)

    async with uow_factory() as uow:
        summary = await uow.summaries.get(order_id)
    assert summary is not None
    assert (summary.status, summary.status_reason) == (
        OrderStatus.CANCELLED,
        "cancelled by customer",
    )


async def test_a_webhook_deleted_while_a_delivery_is_recorded_goes_with_it(
    engine: AsyncEngine,
) -> None:
    """A consumer records a delivery for a webhook (not yet committed) when its owner deletes
    the webhook: the deletion waits, then deletes the delivery with the webhook."""
    sessions = session_factory(engine)
    owner = Principal(user_id=new_id(), role=ROLE_CUSTOMER, token="t")
    webhook = Webhook(
        id=new_id(),
        owner_id=owner.user_id,
        receives_all=False,
        url="https://hooks.example/x",
        event_types=("order.created",),
        secret=new_secret(),
        create_time=T0,
    )
    async with SqlNotificationUnitOfWork(sessions, skip_locked=True) as uow:
        await uow.webhooks.add(webhook)
        await uow.commit()

    recording = SqlNotificationUnitOfWork(sessions, skip_locked=True)
    async with recording as uow:
        delivery = WebhookDelivery.new(
            delivery_id=new_id(),
            webhook_id=webhook.id,
            event_id=new_id(),
            event_type="order.created",
            body="{}",
            now=T0,
        )
        await uow.deliveries.add(delivery)
        assert recording._session is not None
        await recording._session.flush()

        deletion = asyncio.create_task(
            webhooks.delete_webhook(
                webhook_id=webhook.id,
                principal=owner,
                uow=SqlNotificationUnitOfWork(sessions, skip_locked=True),
            )
        )
        assert await waits(deletion), "the deletion did not wait for the delivery"
        await uow.commit()
    await asyncio.wait_for(deletion, 10)

    async with SqlNotificationUnitOfWork(sessions, skip_locked=True) as uow:
        assert await uow.webhooks.get(webhook.id) is None
        assert await uow.deliveries.get(delivery.id) is None
