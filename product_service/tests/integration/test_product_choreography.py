"""The stock side of the choreographed saga on a real Redis and real databases: order events
published on tienda.order.events are consumed by the "product_service" group, whose effects
and stock events reach tienda.product.events exactly once, however often they are delivered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from events.v1 import events_pb2
from google.protobuf.message import Message
from product_service.bootstrap import ProductApp
from product_service.domain.model import Product, ReservationStatus, StockItem
from product_service.service_layer import reservations, services
from tienda_platform.events import EventEnvelope
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint, eventually

from .factories import create_product, running, settings_for
from .product_streams import (
    all_sent,
    dead_letters,
    drained,
    order_event,
    processed,
    publish,
    stream_events,
)

pytestmark = pytest.mark.integration

CHOREOGRAPHY = "choreography"
ORCHESTRATION = "orchestration"


@pytest.fixture
async def service(
    database_url: str, redis_url: str, tmp_path: Path, token_mint: TokenMint
) -> AsyncIterator[ProductApp]:
    """product_service running as a process runs it: consumer, relay and broker started."""
    settings = settings_for(database_url, tmp_path, redis_url=redis_url)
    async with running(settings, token_mint) as app:
        yield app


def created(order_id: str, *lines: tuple[Product, int], mode: str = CHOREOGRAPHY) -> EventEnvelope:
    return order_event(
        "order.created",
        order_id,
        events_pb2.OrderCreated(
            order_id=order_id,
            customer_id=new_id(),
            lines=[
                events_pb2.OrderLine(
                    product_id=p.id,
                    quantity=q,
                    unit_price_cents=p.price_cents,
                    product_name=p.name,
                )
                for p, q in lines
            ],
            total_cents=sum(p.price_cents * q for p, q in lines),
            saga_mode=mode,
        ),
    )


def status_changed(
    event_type: str, order_id: str, status: str, reason: str = "", mode: str = CHOREOGRAPHY
) -> EventEnvelope:
    return order_event(
        event_type,
        order_id,
        events_pb2.OrderStatusChanged(
            order_id=order_id, customer_id=new_id(), status=status, reason=reason, saga_mode=mode
        ),
    )


def confirmed(order_id: str, mode: str = CHOREOGRAPHY) -> EventEnvelope:
    return status_changed("order.confirmed", order_id, "ORDER_STATUS_CONFIRMED", mode=mode)


def cancelled(order_id: str) -> EventEnvelope:
    return status_changed(
        "order.cancelled", order_id, "ORDER_STATUS_CANCELLED", "cancelled by customer"
    )


def declined(order_id: str, reason: str) -> EventEnvelope:
    return order_event(
        "payment.declined", order_id, events_pb2.PaymentDeclined(order_id=order_id, reason=reason)
    )


async def deliver(app: ProductApp, redis_url: str, *envelopes: EventEnvelope) -> None:
    """Publish envelopes on tienda.order.events and wait until every one is handled (or
    ignored) and acknowledged, and the events they caused are relayed."""
    assert app.engine is not None
    engine = app.engine
    await publish(redis_url, *envelopes)
    await eventually(lambda: drained(redis_url))
    await eventually(lambda: all_sent(engine))


async def stock_events(redis_url: str, order_id: str) -> list[tuple[str, Message]]:
    """The stock events published about one order, in order."""
    return [
        (e.envelope.type, e.payload)
        for e in await stream_events(redis_url)
        if e.envelope.subject == f"orders/{order_id}"
    ]


async def stock_of(app: ProductApp, product: Product) -> int:
    return (await services.get_product(deps=app.deps, product_id=product.id)).stock


async def test_a_choreographed_order_is_reserved_committed_then_cancelled(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    order_id = new_id()

    await deliver(service, redis_url, created(order_id, (mug, 2)))
    assert await stock_of(service, mug) == 3
    await deliver(service, redis_url, confirmed(order_id))
    assert await stock_of(service, mug) == 3
    await deliver(service, redis_url, cancelled(order_id))
    assert await stock_of(service, mug) == 5

    assert await stock_events(redis_url, order_id) == [
        (
            "stock.reserved",
            events_pb2.StockReserved(order_id=order_id, saga_mode="choreography"),
        ),
        ("stock.committed", events_pb2.StockCommitted(order_id=order_id)),
        (
            "stock.released",
            events_pb2.StockReleased(order_id=order_id, reason="order cancelled"),
        ),
    ]
    sources = {e.envelope.source for e in await stream_events(redis_url)}
    assert sources == {"product_service"}
    assert await dead_letters(redis_url) == 0


async def test_an_order_beyond_the_stock_is_rejected_with_the_reason(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    tee = await create_product(service.deps, "TEE", stock=1)
    order_id = new_id()
    # All or nothing inside the consumer's transaction: the mugs taken first come back.
    await deliver(service, redis_url, created(order_id, (mug, 2), (tee, 2)))
    assert (await stock_of(service, mug), await stock_of(service, tee)) == (5, 1)
    assert await stock_events(redis_url, order_id) == [
        (
            "stock.rejected",
            events_pb2.StockRejected(
                order_id=order_id, reason="insufficient stock for TEE", saga_mode="choreography"
            ),
        )
    ]


async def test_a_declined_payment_gives_the_stock_back_with_its_reason(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    order_id = new_id()
    await deliver(service, redis_url, created(order_id, (mug, 4)))
    assert await stock_of(service, mug) == 1
    await deliver(service, redis_url, declined(order_id, "payment timed out"))
    assert await stock_of(service, mug) == 5
    assert await stock_events(redis_url, order_id) == [
        (
            "stock.reserved",
            events_pb2.StockReserved(order_id=order_id, saga_mode="choreography"),
        ),
        (
            "stock.released",
            events_pb2.StockReleased(order_id=order_id, reason="payment timed out"),
        ),
    ]


async def test_orchestrated_orders_are_left_to_their_saga(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    cancelled_order, confirmed_order = new_id(), new_id()
    announced = [
        created(cancelled_order, (mug, 1), mode=ORCHESTRATION),
        created(confirmed_order, (mug, 1), mode=ORCHESTRATION),
    ]
    await deliver(service, redis_url, *announced)
    assert await stock_of(service, mug) == 5
    # acknowledged as ignored: nothing to do, so no transaction and no processed-event record
    assert service.engine is not None
    for envelope in announced:
        assert not await processed(service.engine, envelope.id)
    async with service.deps.uow() as uow:
        assert await uow.reservations.get(cancelled_order) is None

    # The saga reserves by RPC, then releases one order and commits the other.
    for order_id in (cancelled_order, confirmed_order):
        await reservations.reserve_stock(
            deps=service.deps, order_id=order_id, items=[StockItem(mug.id, 1)]
        )
    await reservations.release_stock(
        deps=service.deps, order_id=cancelled_order, reason="released by service:order_service"
    )
    await reservations.commit_reservation(deps=service.deps, order_id=confirmed_order)
    # Their events follow; handling them again changes nothing and publishes nothing.
    await deliver(
        service,
        redis_url,
        declined(cancelled_order, "payment declined"),
        cancelled(cancelled_order),
        confirmed(confirmed_order),
    )
    assert await stock_of(service, mug) == 4
    assert [t for t, _ in await stock_events(redis_url, cancelled_order)] == [
        "stock.reserved",
        "stock.released",
    ]
    assert [t for t, _ in await stock_events(redis_url, confirmed_order)] == [
        "stock.reserved",
        "stock.committed",
    ]


async def test_the_confirmation_of_an_orchestrated_order_is_left_to_its_saga(
    service: ProductApp, redis_url: str
) -> None:
    """Its saga commits the reservation by RPC; the event's handler does not read it again.
    An event without a saga mode (recorded before events carried one) still commits."""
    mug = await create_product(service.deps, "MUG", stock=5)
    orchestrated, older = new_id(), new_id()
    for order_id in (orchestrated, older):
        await reservations.reserve_stock(
            deps=service.deps, order_id=order_id, items=[StockItem(mug.id, 1)]
        )
    ignored, handled = confirmed(orchestrated, mode=ORCHESTRATION), confirmed(older, mode="")
    await deliver(service, redis_url, ignored)
    await deliver(service, redis_url, handled)
    async with service.deps.uow() as uow:
        left = await uow.reservations.get(orchestrated)
        committed = await uow.reservations.get(older)
    assert left is not None and left.status is ReservationStatus.RESERVED
    assert committed is not None and committed.status is ReservationStatus.COMMITTED
    assert service.engine is not None
    assert not await processed(service.engine, ignored.id)
    assert await processed(service.engine, handled.id)


async def test_duplicate_deliveries_have_one_effect_across_two_replicas(
    service: ProductApp,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    token_mint: TokenMint,
) -> None:
    mug = await create_product(service.deps, "MUG", stock=10)
    order_id = new_id()
    order_created = created(order_id, (mug, 3))
    # The same order announced again under a new event id: idempotent by order id as well.
    announced_again = created(order_id, (mug, 3))
    settings = settings_for(database_url, tmp_path / "replica", redis_url=redis_url)
    async with running(settings, token_mint):
        await deliver(service, redis_url, *[order_created] * 4, announced_again)
        assert await stock_of(service, mug) == 7
        await deliver(service, redis_url, *[confirmed(order_id)] * 2)
        await deliver(service, redis_url, *[cancelled(order_id)] * 3)
    assert await stock_of(service, mug) == 10
    assert [t for t, _ in await stock_events(redis_url, order_id)] == [
        "stock.reserved",
        "stock.committed",
        "stock.released",
    ]


async def test_an_order_with_malformed_lines_is_rejected_not_retried(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    order_id = new_id()
    await deliver(service, redis_url, created(order_id, (mug, 0)))
    assert await stock_events(redis_url, order_id) == [
        (
            "stock.rejected",
            events_pb2.StockRejected(
                order_id=order_id,
                reason="invalid order: items[0].quantity must be between 1 and 1000",
                saga_mode="choreography",
            ),
        )
    ]
    assert await dead_letters(redis_url) == 0


async def test_a_confirmation_after_the_cancellation_changes_nothing(
    service: ProductApp, redis_url: str
) -> None:
    mug = await create_product(service.deps, "MUG", stock=5)
    order_id = new_id()
    await deliver(service, redis_url, created(order_id, (mug, 2)))
    await deliver(service, redis_url, cancelled(order_id))
    await deliver(service, redis_url, confirmed(order_id))
    assert await stock_of(service, mug) == 5
    async with service.deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
    assert stored is not None and stored.status is ReservationStatus.RELEASED
    assert [t for t, _ in await stock_events(redis_url, order_id)] == [
        "stock.reserved",
        "stock.released",
    ]
    assert await dead_letters(redis_url) == 0


async def test_50_choreographed_orders_for_the_last_10_units_across_two_replicas(
    service: ProductApp,
    redis_url: str,
    database_url: str,
    tmp_path: Path,
    token_mint: TokenMint,
) -> None:
    hot = await create_product(service.deps, "HOT", stock=10)
    orders = [created(new_id(), (hot, 1)) for _ in range(50)]
    settings = settings_for(database_url, tmp_path / "replica", redis_url=redis_url)
    async with running(settings, token_mint):
        await deliver(service, redis_url, *orders)
    assert await stock_of(service, hot) == 0
    outcomes = [e for e in await stream_events(redis_url) if e.envelope.type.startswith("stock.")]
    assert len({e.envelope.subject for e in outcomes}) == 50  # one decision per order
    assert (
        sorted(e.envelope.type for e in outcomes)
        == ["stock.rejected"] * 40 + ["stock.reserved"] * 10
    )
    assert {e.payload.reason for e in outcomes if e.envelope.type == "stock.rejected"} == {
        "insufficient stock for HOT"
    }
