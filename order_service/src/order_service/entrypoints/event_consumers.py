"""order_service's event subscribers: each turns an event into a call of the service layer,
inside the consumer's transaction (which also records the event as processed).

Two consumer groups, exactly as tienda_contracts.topology declares them:
- "order_service": the choreographed saga (stock.*) and the customer snapshot (user.*);
- "order_read_model": the order summaries behind ListOrders (order.*, user.*).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import partial

from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import subscriptions_of
from tienda_platform.consumers import Condition, EventConsumer, Handler
from tienda_platform.events import EventEnvelope

from order_service.domain.model import OrderLine, OrderStatus, SagaMode
from order_service.service_layer import choreography, customers, read_model
from order_service.service_layer.ports import SagaRunsHere
from order_service.service_layer.unit_of_work import SessionUnitOfWork, gave_background_work

SAGA_GROUP = "order_service"
READ_MODEL_GROUP = "order_read_model"


def _time(envelope: EventEnvelope) -> datetime:
    return envelope.time.ToDatetime(tzinfo=UTC)


async def _stock_reserved(
    session: AsyncSession,
    envelope: EventEnvelope,
    payload: Message,
    saga_runs_here: SagaRunsHere | None = None,
) -> None:
    assert isinstance(payload, events_pb2.StockReserved)
    await choreography.stock_reserved(
        uow=SessionUnitOfWork(session), order_id=payload.order_id, saga_runs_here=saga_runs_here
    )


async def _stock_rejected(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.StockRejected)
    await choreography.stock_rejected(
        uow=SessionUnitOfWork(session), order_id=payload.order_id, reason=payload.reason
    )


async def _stock_released(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.StockReleased)
    await choreography.stock_released(uow=SessionUnitOfWork(session), order_id=payload.order_id)


async def _user_changed(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.UserRegistered | events_pb2.UserUpdated)
    await customers.customer_changed(
        uow=SessionUnitOfWork(session),
        customer_id=payload.user_id,
        email=payload.email,
        full_name=payload.full_name,
        event_time=_time(envelope),
    )


async def _user_deleted(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.UserDeleted)
    await customers.customer_deleted(
        uow=SessionUnitOfWork(session), customer_id=payload.user_id, event_time=_time(envelope)
    )


async def _summary_created(
    session: AsyncSession, envelope: EventEnvelope, payload: Message
) -> None:
    assert isinstance(payload, events_pb2.OrderCreated)
    await read_model.order_created(
        uow=SessionUnitOfWork(session),
        order_id=payload.order_id,
        customer_id=payload.customer_id,
        lines=[
            OrderLine(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price_cents=line.unit_price_cents,
            )
            for line in payload.lines
        ],
        total_cents=payload.total_cents,
        event_time=_time(envelope),
    )


async def _summary_status(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.OrderStatusChanged)
    await read_model.order_status_changed(
        uow=SessionUnitOfWork(session),
        order_id=payload.order_id,
        customer_id=payload.customer_id,
        status=OrderStatus(payload.status.removeprefix("ORDER_STATUS_")),
        reason=payload.reason,
        total_cents=payload.total_cents,
        event_time=_time(envelope),
    )


async def _summary_customer(
    session: AsyncSession, envelope: EventEnvelope, payload: Message
) -> None:
    assert isinstance(payload, events_pb2.UserRegistered | events_pb2.UserUpdated)
    await read_model.customer_named(
        uow=SessionUnitOfWork(session),
        customer_id=payload.user_id,
        full_name=payload.full_name,
        event_time=_time(envelope),
    )


async def _summary_forget(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.UserDeleted)
    await read_model.customer_forgotten(
        uow=SessionUnitOfWork(session), customer_id=payload.user_id, event_time=_time(envelope)
    )


HANDLERS: Mapping[str, Mapping[str, Handler]] = {
    SAGA_GROUP: {
        "stock.reserved": _stock_reserved,
        "stock.rejected": _stock_rejected,
        "stock.released": _stock_released,
        "user.registered": _user_changed,
        "user.updated": _user_changed,
        "user.deleted": _user_deleted,
    },
    READ_MODEL_GROUP: {
        "order.created": _summary_created,
        "order.confirmed": _summary_status,
        "order.cancelled": _summary_status,
        "order.rejected": _summary_status,
        "user.registered": _summary_customer,
        "user.updated": _summary_customer,
        "user.deleted": _summary_forget,
    },
}


def _not_orchestrated(payload: Message) -> bool:
    """The choreography's stock events: an orchestrated order's saga learnt the outcome from
    its own ReserveStock call (an event from before stock events carried the saga mode is
    handled, and the handler looks at the order)."""
    assert isinstance(payload, events_pb2.StockReserved | events_pb2.StockRejected)
    return payload.saga_mode != SagaMode.ORCHESTRATION.value


CONDITIONS: Mapping[tuple[str, str], Condition] = {
    (SAGA_GROUP, "stock.reserved"): _not_orchestrated,
    (SAGA_GROUP, "stock.rejected"): _not_orchestrated,
}


def build_consumer(
    group: str,
    *,
    broker: RedisBroker,
    engine: AsyncEngine,
    consumer: str,
    after_commit: Callable[[], None] | None = None,
    saga_runs_here: SagaRunsHere | None = None,
) -> EventConsumer:
    """The consumer of group, reading what the topology says the group reads.

    after_commit runs after a handler's commit that recorded events or stored a saga that no
    worker holds (the read model's handlers do neither). With saga_runs_here, the payment of
    a choreographed order whose stock is reserved runs at once in this process's worker."""
    handlers = dict(HANDLERS[group])
    if group == SAGA_GROUP and saga_runs_here is not None:
        handlers["stock.reserved"] = partial(_stock_reserved, saga_runs_here=saga_runs_here)
    event_consumer = EventConsumer(
        broker=broker,
        engine=engine,
        group=group,
        consumer=consumer,
        after_commit=after_commit,
        wake_when=gave_background_work,
    )
    for subscription in subscriptions_of(group):
        for event_type in subscription.event_types:
            event_consumer.on(
                subscription.stream,
                event_type,
                handlers[event_type],
                when=CONDITIONS.get((group, event_type)),
            )
    return event_consumer
