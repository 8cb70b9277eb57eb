"""order_service as it runs in production (gRPC server, database, outbox relay, saga worker,
consumer groups on real Redis), with product_service replaced by an in-memory catalogue and,
for the choreographed saga, by a stand-in that reacts to order events as product_service does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from order.v1 import order_pb2, order_pb2_grpc
from order_service.bootstrap import OrderApp, bootstrap
from order_service.config import Settings
from order_service.service_layer.ports import PaymentProvider, StockLine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import ORDER_EVENTS
from tienda_platform.aio import cancel_and_wait
from tienda_platform.consumers import EventConsumer
from tienda_platform.database import PLATFORM_METADATA, create_engine, session_factory
from tienda_platform.events import EventEnvelope, build_envelope, stream_of
from tienda_platform.outbox import OutboxEvent
from tienda_platform.testing import TokenMint

from ..unit.fakes import FakeProductCatalog, wait_until

TERMINAL = (
    order_pb2.ORDER_STATUS_CONFIRMED,
    order_pb2.ORDER_STATUS_REJECTED,
    order_pb2.ORDER_STATUS_CANCELLED,
)


class StandInProductService:
    """product_service's side of the choreographed saga, over the fake catalogue: the events
    it consumes (group "product_service") and those it answers with."""

    def __init__(self, catalog: FakeProductCatalog, broker: RedisBroker, engine: AsyncEngine):
        self.catalog = catalog
        self.broker = broker
        self.consumer = EventConsumer(
            broker=broker, engine=engine, group="product_service", consumer="stand-in"
        )
        self.consumer.on(ORDER_EVENTS, "order.created", self._created)
        self.consumer.on(ORDER_EVENTS, "order.confirmed", self._confirmed)
        self.consumer.on(ORDER_EVENTS, "order.cancelled", self._released)
        self.consumer.on(ORDER_EVENTS, "payment.declined", self._released)

    async def publish(self, event_type: str, order_id: str, payload: Message) -> None:
        envelope = build_envelope(
            event_type=event_type,
            source="product_service",
            subject=f"orders/{order_id}",
            payload=payload,
        )
        await self.broker.publish(envelope.SerializeToString(), stream=stream_of(event_type))

    async def _created(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        assert isinstance(payload, events_pb2.OrderCreated)
        if payload.saga_mode != "choreography":
            return
        reservation = await self.catalog.reserve_stock(
            order_id=payload.order_id,
            lines=[StockLine(line.product_id, line.quantity) for line in payload.lines],
        )
        if reservation.reserved:
            await self.publish(
                "stock.reserved",
                payload.order_id,
                events_pb2.StockReserved(order_id=payload.order_id, saga_mode="choreography"),
            )
        else:
            await self.publish(
                "stock.rejected",
                payload.order_id,
                events_pb2.StockRejected(
                    order_id=payload.order_id,
                    reason=reservation.reason,
                    saga_mode="choreography",
                ),
            )

    async def _confirmed(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        assert isinstance(payload, events_pb2.OrderStatusChanged)
        if self.catalog.reservations.get(payload.order_id) is not None:
            await self.catalog.commit_reservation(order_id=payload.order_id)

    async def _released(
        self, session: AsyncSession, envelope: EventEnvelope, payload: Message
    ) -> None:
        assert isinstance(payload, events_pb2.OrderStatusChanged | events_pb2.PaymentDeclined)
        await self.catalog.release_stock(order_id=payload.order_id)
        await self.publish(
            "stock.released",
            payload.order_id,
            events_pb2.StockReleased(order_id=payload.order_id, reason=envelope.type),
        )


@dataclass
class RunningOrderService:
    app: OrderApp
    stub: order_pb2_grpc.OrderServiceStub
    catalog: FakeProductCatalog
    mint: TokenMint

    @property
    def engine(self) -> AsyncEngine:
        assert self.app.engine is not None
        return self.app.engine

    def auth(self, user_id: str, role: str = "customer") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.mint.token(user_id, role)}"),)

    async def place(
        self, user_id: str, token: str = "tok_ok", items: Sequence[tuple[str, int]] = ()
    ) -> order_pb2.Order:
        request = order_pb2.CreateOrderRequest(
            items=[order_pb2.OrderItemRequest(product_id=p, quantity=q) for p, q in items],
            payment_token=token,
        )
        return await self.stub.CreateOrder(request, metadata=self.auth(user_id))

    async def get(self, order_id: str, user_id: str) -> order_pb2.Order:
        return await self.stub.GetOrder(
            order_pb2.GetOrderRequest(id=order_id), metadata=self.auth(user_id)
        )

    async def ended(self, order_id: str, user_id: str, *, within: float = 15) -> order_pb2.Order:
        """The order once it reached a terminal state."""

        async def terminal() -> bool:
            return (await self.get(order_id, user_id)).status in TERMINAL

        await wait_until(terminal, within=within)
        return await self.get(order_id, user_id)

    async def listed(self, user_id: str, role: str = "customer") -> list[order_pb2.Order]:
        """Every order ListOrders shows the user, page by page."""
        orders: list[order_pb2.Order] = []
        token = ""
        while True:
            page = await self.stub.ListOrders(
                order_pb2.ListOrdersRequest(page_size=100, page_token=token),
                metadata=self.auth(user_id, role),
            )
            orders += page.orders
            token = page.next_page_token
            if not token:
                return orders

    async def publish(self, event_type: str, subject: str, payload: Message) -> EventEnvelope:
        """Publish an event as another service would (straight to its stream)."""
        envelope = build_envelope(
            event_type=event_type, source="tests", subject=subject, payload=payload
        )
        await self.republish(envelope)
        return envelope

    async def republish(self, envelope: EventEnvelope) -> None:
        assert self.app.broker is not None
        await self.app.broker.publish(envelope.SerializeToString(), stream=stream_of(envelope.type))

    async def outbox(self, order_id: str) -> list[str]:
        """The types of the events order_service wrote about the order, in order."""
        async with session_factory(self.engine)() as session:
            rows = await session.exec(
                select(OutboxEvent)
                .where(OutboxEvent.subject == f"orders/{order_id}")
                .order_by(col(OutboxEvent.create_time), col(OutboxEvent.id))
            )
            return [row.event_type for row in rows.all()]


@contextlib.asynccontextmanager
async def run_order_service(
    *,
    database_url: str,
    redis_url: str,
    mint: TokenMint,
    catalog: FakeProductCatalog,
    saga_mode: str,
    scratch: Path,
    payments: PaymentProvider | None = None,
    payment_timeout_seconds: float = 0.2,
) -> AsyncIterator[RunningOrderService]:
    """Serve order_service on a free port with its background jobs, and (in choreography) the
    product_service stand-in; stop everything on exit. Payments go to the simulated provider
    unless `payments` is given."""
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        saga_mode=saga_mode,
        payment_timeout_seconds=payment_timeout_seconds,
        saga_poll_seconds=0.05,
        bind_host="127.0.0.1",
    )
    app = bootstrap(settings=settings, catalog=catalog, payments=payments, verifier=mint.verifier())
    server = app.grpc_server(port=0, metrics=False)
    await server.start()
    await app.prepare()
    jobs = [asyncio.create_task(job()) for job in app.background]
    product_engine = create_engine(f"sqlite+aiosqlite:///{scratch / 'stand_in_product.db'}")
    async with product_engine.begin() as connection:
        await connection.run_sync(PLATFORM_METADATA.create_all)
    product_broker = RedisBroker(redis_url)
    stand_in = StandInProductService(catalog, product_broker, product_engine)
    await stand_in.consumer.declare()
    await product_broker.start()
    await server.mark_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}")
    try:
        yield RunningOrderService(app, order_pb2_grpc.OrderServiceStub(channel), catalog, mint)
    finally:
        await channel.close()
        await server.stop()
        await cancel_and_wait(jobs)
        await product_broker.stop()
        await product_engine.dispose()
        await app.cleanup()
