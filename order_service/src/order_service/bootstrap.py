"""Wires order_service together: real adapters by default, any of them replaceable."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import partial
from pathlib import Path

import grpc
from faststream.redis import RedisBroker
from order.v1 import order_pb2_grpc
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_contracts.topology import subscriptions_of
from tienda_platform import statement_spans
from tienda_platform.aio import cancel_and_wait
from tienda_platform.auth import (
    JwksKeySource,
    ServiceTokenSource,
    TokenVerifier,
    grpc_jwks_fetcher,
)
from tienda_platform.consumers import EventConsumer, replica_name
from tienda_platform.database import create_engine, migrate, session_factory
from tienda_platform.grpc_server import GrpcServer, GrpcService, ServerConfig
from tienda_platform.messaging import create_broker, start_consumers, watch_streams
from tienda_platform.outbox import OutboxRelay

from order_service.adapters.payments import SimulatedPaymentProvider
from order_service.adapters.product_catalog import GrpcProductCatalog
from order_service.config import Settings, get_settings
from order_service.domain.model import SagaMode
from order_service.domain.saga import RetryPolicy
from order_service.entrypoints.event_consumers import (
    READ_MODEL_GROUP,
    SAGA_GROUP,
    build_consumer,
)
from order_service.entrypoints.grpc_servicer import (
    SERVICE_NAME,
    OrderDependencies,
    OrderServicer,
)
from order_service.notification_bootstrap import wire_notifications
from order_service.service_layer.order_saga import SagaRunner
from order_service.service_layer.ports import PaymentProvider, ProductCatalog
from order_service.service_layer.saga_worker import SagaWorker
from order_service.service_layer.unit_of_work import AbstractUnitOfWork, SqlUnitOfWork

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


@dataclass
class OrderApp:
    """A wired order_service: its dependencies, and how to serve, prepare and clean up."""

    settings: Settings
    deps: OrderDependencies
    verifier: TokenVerifier
    engine: AsyncEngine | None = None
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Redis Streams: one broker for every consumer group of this process.
    broker: RedisBroker | None = None
    consumers: list[EventConsumer] = field(default_factory=list)
    # Jobs that run while the server serves (outbox relay, saga worker, ...).
    background: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    saga_worker: SagaWorker | None = None
    # declares the groups and starts the broker, retrying while Redis is away
    consumers_started: asyncio.Task[None] | None = None

    def grpc_server(self, *, port: int | None = None, metrics: bool = True) -> GrpcServer:
        """The gRPC server; every method needs a bearer token."""
        servicer = OrderServicer(self.deps)

        def register(server: grpc.aio.Server) -> None:
            order_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)

        return GrpcServer(
            services=[GrpcService(SERVICE_NAME, register)],
            config=ServerConfig(
                host=self.settings.bind_host,
                port=self.settings.grpc_port if port is None else port,
                metrics_port=(self.settings.metrics_port or None) if metrics else None,
                grace_seconds=self.settings.shutdown_grace_seconds,
            ),
            verifier=self.verifier,
            public_methods=frozenset(),
        )

    async def migrate(self) -> None:
        """Bring the database schema up to date (a no-op when the unit of work is a fake)."""
        if self.engine is not None:
            await migrate(MIGRATIONS_DIR, self.settings.database_url)

    async def prepare(self) -> None:
        """Migrate, then declare the consumer groups (from the start of their streams) and
        start the broker, so that no event published before is missed; while Redis cannot
        be reached, serve without them (see start_consumers)."""
        await self.migrate()
        if self.broker is not None:
            self.consumers_started = await start_consumers(self.broker, self.consumers)

    async def cleanup(self) -> None:
        """Stop the broker, close channels and dispose of the database engine."""
        if self.consumers_started is not None:
            await cancel_and_wait([self.consumers_started])
        if self.broker is not None:
            await self.broker.stop()
        for close in self.closers:
            await close()
        if self.engine is not None:
            await self.engine.dispose()


def bootstrap(
    *,
    settings: Settings | None = None,
    uow_factory: Callable[[], AbstractUnitOfWork] | None = None,
    catalog: ProductCatalog | None = None,
    payments: PaymentProvider | None = None,
    verifier: TokenVerifier | None = None,
    service_token: Callable[[], Awaitable[str]] | None = None,
) -> OrderApp:
    """order_service with real adapters, except those given. With a fake unit of work there
    is no database, so no outbox relay, saga worker or event consumers either."""
    settings = settings or get_settings()
    engine: AsyncEngine | None = None
    closers: list[Callable[[], Awaitable[None]]] = []
    # filled once the outbox relay and the saga worker exist
    wake_relay: list[Callable[[], None]] = []
    wake_sagas: list[Callable[[], None]] = []

    def events_recorded() -> None:
        for notify in wake_relay:
            notify()

    def saga_due() -> None:
        for notify in wake_sagas:
            notify()

    read_uow_factory: Callable[[], AbstractUnitOfWork] | None = None
    if uow_factory is None:
        engine = create_engine(settings.database_url)
        statement_spans.instrument_engine(engine)
        sessions = session_factory(engine)
        read_uow_factory = partial(SqlUnitOfWork, session_factory(engine, read_only=True))

        def uow_factory() -> AbstractUnitOfWork:
            return SqlUnitOfWork(sessions, on_events=events_recorded, on_saga_due=saga_due)

    if catalog is None:
        if service_token is None:
            service_token = ServiceTokenSource(
                target=settings.auth_grpc_target,
                client_id="order_service",
                client_secret=settings.service_client_secret.get_secret_value(),
            ).token
        grpc_catalog = GrpcProductCatalog.connect(
            settings.product_grpc_target,
            timeout=settings.product_rpc_timeout_seconds,
            service_token=service_token,
        )
        closers.append(grpc_catalog.close)
        catalog = grpc_catalog
    if verifier is None:
        verifier = TokenVerifier(
            JwksKeySource(grpc_jwks_fetcher(settings.auth_grpc_target)),
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )
    deps = OrderDependencies(
        uow_factory=uow_factory,
        catalog=catalog,
        saga_mode=SagaMode(settings.saga_mode),
        read_uow_factory=read_uow_factory,
    )
    app = OrderApp(settings=settings, deps=deps, verifier=verifier, engine=engine, closers=closers)
    if engine is not None:
        _wire_events(
            app,
            engine=engine,
            payments=payments or SimulatedPaymentProvider(session_factory(engine)),
            wake_relay=wake_relay,
            wake_sagas=wake_sagas,
        )
    return app


def _wire_events(
    app: OrderApp,
    *,
    engine: AsyncEngine,
    payments: PaymentProvider,
    wake_relay: list[Callable[[], None]],
    wake_sagas: list[Callable[[], None]],
) -> None:
    """The outbox relay, the saga worker and the consumer groups, on one Redis broker."""
    settings = app.settings
    broker = create_broker(settings.redis_url, service_name="order_service")
    relay = OutboxRelay(engine=engine, broker=broker)
    worker_name = replica_name("order_service")
    worker = SagaWorker(
        uow_factory=app.deps.uow_factory,
        runner=SagaRunner(
            uow_factory=app.deps.uow_factory,
            read_uow_factory=app.deps.read_uow_factory,
            catalog=app.deps.catalog,
            payments=payments,
            payment_timeout=settings.payment_timeout_seconds,
            worker=worker_name,
            lease=timedelta(seconds=settings.saga_lease_seconds),
            retry=RetryPolicy(max_seconds=settings.saga_max_backoff_seconds),
        ),
        poll_seconds=settings.saga_poll_seconds,
    )
    # a commit may have written events (for the relay) or made a saga due (for the worker)
    wake_relay.append(relay.notify)
    wake_sagas.append(worker.notify)

    def handled() -> None:
        # a consumer's handler may have done either; the consumer tells only that it did
        relay.notify()
        worker.notify()

    app.broker = broker
    app.saga_worker = worker
    app.deps = replace(app.deps, saga_runs_here=worker)
    app.consumers += [
        build_consumer(
            SAGA_GROUP,
            broker=broker,
            engine=engine,
            consumer=worker_name,
            after_commit=handled,
            saga_runs_here=worker,
        ),
        # the read model's handlers write only summaries: nothing for the relay or the worker
        build_consumer(READ_MODEL_GROUP, broker=broker, engine=engine, consumer=worker_name),
    ]
    app.background += [relay.run, worker.run]
    wire_notifications(app, engine=engine, broker=broker, consumer=worker_name)
    # the pending, lag and dead-letter gauges of every group this service runs
    watched = [s for consumer in app.consumers for s in subscriptions_of(consumer.group)]
    app.background.append(partial(watch_streams, broker, watched))
