"""The choreography handlers inside the consumer's transaction, on real databases: the stock
change, its outbox row and the processed-event record commit together or not at all."""

from __future__ import annotations

import pytest
from events.v1 import events_pb2
from google.protobuf.message import Message
from product_service.bootstrap import ProductApp
from product_service.entrypoints.event_consumers import GROUP, StockEventHandlers
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import ORDER_EVENTS
from tienda_platform.consumers import EventConsumer
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope, payload_of
from tienda_platform.ids import new_id

from .factories import create_product
from .product_streams import order_event, outbox_events, processed

pytestmark = pytest.mark.integration


def _order_created(order_id: str, product_id: str, quantity: int) -> EventEnvelope:
    return order_event(
        "order.created",
        order_id,
        events_pb2.OrderCreated(
            order_id=order_id,
            customer_id=new_id(),
            lines=[events_pb2.OrderLine(product_id=product_id, quantity=quantity)],
            saga_mode="choreography",
        ),
    )


async def _stock(app: ProductApp, product_id: str) -> int:
    async with app.deps.uow() as uow:
        product = await uow.products.get(product_id)
    assert product is not None
    return product.stock


async def test_a_transaction_that_fails_after_the_handler_keeps_nothing(app: ProductApp) -> None:
    assert app.engine is not None
    mug = await create_product(app.deps, "MUG", stock=5)
    order_id = new_id()
    envelope = _order_created(order_id, mug.id, 2)
    handlers = StockEventHandlers(app.deps)

    with pytest.raises(RuntimeError):
        async with session_factory(app.engine)() as session, session.begin():
            await handlers.order_created(session, envelope, payload_of(envelope))
            raise RuntimeError("the consumer's commit never happens")
    assert await _stock(app, mug.id) == 5
    async with app.deps.uow() as uow:
        assert await uow.reservations.get(order_id) is None
    assert [e.envelope.type for e in await outbox_events(app.engine)] == ["product.created"]

    async with session_factory(app.engine)() as session, session.begin():
        await handlers.order_created(session, envelope, payload_of(envelope))
    assert await _stock(app, mug.id) == 3
    assert [e.envelope.type for e in await outbox_events(app.engine)] == [
        "product.created",
        "stock.reserved",
    ]


async def test_a_failed_handling_is_retried_and_takes_effect_once(app: ProductApp) -> None:
    assert app.engine is not None and app.messaging is not None
    mug = await create_product(app.deps, "MUG", stock=5)
    envelope = _order_created(new_id(), mug.id, 2)
    handlers = StockEventHandlers(app.deps)
    attempts: list[int] = []

    async def reserve_then_fail_once(
        session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        await handlers.order_created(session, envelope, payload)
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("lost the database after the reservation")

    consumer = EventConsumer(
        broker=app.messaging.broker, engine=app.engine, group=GROUP, consumer="handler-test"
    )
    consumer.on(ORDER_EVENTS, "order.created", reserve_then_fail_once)
    body = envelope.SerializeToString()

    with pytest.raises(RuntimeError):
        await consumer.handle(ORDER_EVENTS, body, b"1-0")
    assert await _stock(app, mug.id) == 5
    assert not await processed(app.engine, envelope.id)

    await consumer.handle(ORDER_EVENTS, body, b"1-0")  # the retry, after a reclaim
    # a duplicate delivery: handling is optimistic, so the handler may run, but its
    # transaction rolls back on the processed-events row; the stock and the events below
    # show no second effect
    await consumer.handle(ORDER_EVENTS, body, b"2-0")
    assert await _stock(app, mug.id) == 3
    assert await processed(app.engine, envelope.id)
    assert [e.envelope.type for e in await outbox_events(app.engine)] == [
        "product.created",
        "stock.reserved",
    ]
