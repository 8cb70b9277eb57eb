"""Wires product_service together: real pieces by default, fakes where a test passes them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from faststream.redis import RedisBroker
from product.v1 import product_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_contracts.topology import subscriptions_of
from tienda_platform.aio import cancel_and_wait
from tienda_platform.auth import JwksKeySource, TokenVerifier, grpc_jwks_fetcher
from tienda_platform.consumers import EventConsumer, replica_name
from tienda_platform.database import create_engine, migrate, session_factory
from tienda_platform.grpc_server import GrpcServer, GrpcService, ServerConfig
from tienda_platform.messaging import create_broker, start_consumers, watch_streams
from tienda_platform.outbox import OutboxRelay, take_recorded
from tienda_platform.statement_spans import instrument_engine

from product_service.config import Settings
from product_service.entrypoints import event_consumers
from product_service.entrypoints.grpc_servicer import (
    PUBLIC_METHODS,
    SERVICE_NAME,
    ProductServicer,
)
from product_service.service_layer.demo_catalogue import seed_demo_products
from product_service.service_layer.services import Clock, Dependencies
from product_service.service_layer.unit_of_work import AbstractUnitOfWork, SqlUnitOfWork

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Messaging:
    """The process's Redis side: the broker, the relay of the outbox, and the consumer of the
    "product_service" group."""

    broker: RedisBroker
    relay: OutboxRelay
    consumer: EventConsumer


@dataclass
class ProductApp:
    """The wired service: its dependencies, its gRPC server, its messaging (None over a fake
    unit of work), and its start-up and clean-up."""

    settings: Settings
    deps: Dependencies
    server: GrpcServer
    engine: AsyncEngine | None
    messaging: Messaging | None = None
    # declares the group and starts the broker, retrying while Redis is away
    consumers_started: asyncio.Task[None] | None = None

    @property
    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """Jobs that run while serving: the outbox relay and the consumer-group gauges."""
        if self.messaging is None:
            return []
        broker = self.messaging.broker
        return [
            self.messaging.relay.run,
            partial(watch_streams, broker, subscriptions_of(event_consumers.GROUP)),
        ]

    async def migrate(self) -> None:
        """Upgrade the database schema (nothing to do when the unit of work is a fake)."""
        if self.engine is not None:
            await migrate(MIGRATIONS_DIR, self.settings.database_url)

    async def prepare(self) -> None:
        """Everything before serving: migrations, the demo catalogue when asked for, then the
        consumer group (declared from the start of its streams, so that no event published
        before is missed) and the broker; while Redis cannot be reached, serve without them
        (see start_consumers)."""
        await self.migrate()
        if self.settings.seed_demo:
            await seed_demo_products(deps=self.deps)
        if self.messaging is not None:
            self.consumers_started = await start_consumers(
                self.messaging.broker, [self.messaging.consumer]
            )

    async def close(self) -> None:
        if self.consumers_started is not None:
            await cancel_and_wait([self.consumers_started])
        if self.messaging is not None:
            await self.messaging.broker.stop()
        if self.engine is not None:
            await self.engine.dispose()


def bootstrap(
    *,
    settings: Settings,
    uow: Callable[[], AbstractUnitOfWork] | None = None,
    clock: Clock | None = None,
    verifier: TokenVerifier | None = None,
) -> ProductApp:
    """Build the service from settings; `uow`, `clock` and `verifier` replace the real ones.
    Over a fake unit of work there is no database, so no relay or consumer either."""
    engine = messaging = None
    read_uow: Callable[[], AbstractUnitOfWork] | None = None
    if uow is None:
        engine = create_engine(settings.database_url)
        instrument_engine(engine)
        # Connects lazily: a Redis outage delays events but never blocks a state change.
        broker = create_broker(settings.redis_url, service_name="product_service")
        relay = OutboxRelay(engine=engine, broker=broker)
        uow = partial(SqlUnitOfWork, session_factory(engine), on_events=relay.notify)
        read_uow = partial(SqlUnitOfWork, session_factory(engine, read_only=True))
        consumer = EventConsumer(
            broker=broker,
            engine=engine,
            group=event_consumers.GROUP,
            consumer=replica_name("product_service"),
            after_commit=relay.notify,
            wake_when=take_recorded,
        )
        messaging = Messaging(broker=broker, relay=relay, consumer=consumer)
    deps = Dependencies(uow=uow, clock=clock or _utc_now, read_uow=read_uow)
    if messaging is not None:
        event_consumers.subscribe(messaging.consumer, deps)
    if verifier is None:
        verifier = TokenVerifier(
            JwksKeySource(grpc_jwks_fetcher(settings.auth_grpc_target)),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    servicer = ProductServicer(deps)
    server = GrpcServer(
        services=[
            GrpcService(
                name=SERVICE_NAME,
                register=lambda s: product_pb2_grpc.add_ProductServiceServicer_to_server(
                    servicer, s
                ),
            )
        ],
        config=ServerConfig(
            host=settings.bind_host,
            port=settings.grpc_port,
            metrics_port=settings.metrics_port,
            grace_seconds=settings.shutdown_grace_seconds,
        ),
        verifier=verifier,
        public_methods=PUBLIC_METHODS,
    )
    return ProductApp(
        settings=settings, deps=deps, server=server, engine=engine, messaging=messaging
    )
