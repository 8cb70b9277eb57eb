"""product_service's side of the choreographed order saga: order events in, stock effects and
stock events out.

Each handler runs inside the consumer's transaction: the reservation use cases get a unit of
work bound to that session, so the stock change, its outbox row and the processed-event record
commit together (or not at all, and the entry is retried).
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

from events.v1 import events_pb2
from google.protobuf.message import Message
from loguru import logger
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import subscriptions_of
from tienda_platform.consumers import Condition, EventConsumer, Handler
from tienda_platform.errors import InvalidArgument
from tienda_platform.events import EventEnvelope
from tienda_platform.telemetry import set_span_attributes

from product_service.domain.errors import ReservationNotCommittable
from product_service.domain.model import ID_MAX_LENGTH, StockItem
from product_service.service_layer import reservations
from product_service.service_layer.services import Dependencies
from product_service.service_layer.unit_of_work import SessionUnitOfWork

GROUP = "product_service"
ORDER_CANCELLED_REASON = "order cancelled"


class StockEventHandlers:
    """The handlers of the "product_service" consumer group, over the service's dependencies."""

    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    def _in(self, session: AsyncSession) -> Dependencies:
        return replace(self._deps, uow=partial(SessionUnitOfWork, session))

    async def order_created(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        """Reserve the lines of a choreographed order (see `choreographed`)."""
        assert isinstance(payload, events_pb2.OrderCreated)
        _span_order(payload.order_id)
        deps = self._in(session)
        try:
            await reservations.reserve_stock(
                deps=deps,
                order_id=payload.order_id,
                items=[StockItem(line.product_id, line.quantity) for line in payload.lines],
                saga_mode=reservations.CHOREOGRAPHY,
            )
        except InvalidArgument as error:
            # Retrying cannot fix the lines; a rejection ends the order's saga instead.
            await reservations.reject_reservation(
                deps=deps,
                order_id=payload.order_id,
                reason=reservations.rejection_reason(error),
                saga_mode=reservations.CHOREOGRAPHY,
            )

    async def order_confirmed(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        """Make the reservation of an order that is not orchestrated final (see
        `not_orchestrated`)."""
        assert isinstance(payload, events_pb2.OrderStatusChanged)
        _span_order(payload.order_id)
        try:
            await reservations.commit_reservation(deps=self._in(session), order_id=payload.order_id)
        except ReservationNotCommittable as error:
            # A cancellation handled first (by another replica) released it; the stock is back
            # and retrying would not change that.
            logger.warning(
                "order confirmed but its reservation is not committable: {error}",
                error=error.message,
                order_id=payload.order_id,
            )

    async def payment_declined(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        """The compensation: give the stock back, with the payment's reason."""
        assert isinstance(payload, events_pb2.PaymentDeclined)
        _span_order(payload.order_id)
        await reservations.release_stock(
            deps=self._in(session), order_id=payload.order_id, reason=payload.reason
        )

    async def order_cancelled(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        """Give back the stock of a cancelled order, reserved or committed (idempotent, so an
        orchestrated order whose saga released it already is left as it is)."""
        assert isinstance(payload, events_pb2.OrderStatusChanged)
        _span_order(payload.order_id)
        await reservations.release_stock(
            deps=self._in(session), order_id=payload.order_id, reason=ORDER_CANCELLED_REASON
        )

    def by_event_type(self) -> dict[str, Handler]:
        return {
            "order.created": self.order_created,
            "order.confirmed": self.order_confirmed,
            "payment.declined": self.payment_declined,
            "order.cancelled": self.order_cancelled,
        }


def choreographed(payload: Message) -> bool:
    """order.created concerns this group for choreographed orders only: an orchestrated
    order's saga reserves by RPC."""
    assert isinstance(payload, events_pb2.OrderCreated)
    return payload.saga_mode == reservations.CHOREOGRAPHY


def not_orchestrated(payload: Message) -> bool:
    """order.confirmed concerns this group unless the order is orchestrated (its saga
    committed the reservation by RPC before confirming it); an event recorded before events
    carried a saga mode counts as choreographed."""
    assert isinstance(payload, events_pb2.OrderStatusChanged)
    return payload.saga_mode != reservations.ORCHESTRATION


CONDITIONS: dict[str, Condition] = {
    "order.created": choreographed,
    "order.confirmed": not_orchestrated,
}


def _span_order(order_id: str) -> None:
    set_span_attributes(order_id=order_id[:ID_MAX_LENGTH])


def subscribe(consumer: EventConsumer, deps: Dependencies) -> None:
    """Register a handler for every event the topology gives the "product_service" group."""
    handlers = StockEventHandlers(deps).by_event_type()
    for subscription in subscriptions_of(GROUP):
        for event_type in subscription.event_types:
            consumer.on(
                subscription.stream,
                event_type,
                handlers[event_type],
                when=CONDITIONS.get(event_type),
            )
