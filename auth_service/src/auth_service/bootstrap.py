"""Wires auth_service together: real pieces by default, fakes where a test passes them."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from auth.v1 import auth_pb2_grpc
from faststream.redis import RedisBroker
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.auth import JwksKeySource, TokenVerifier
from tienda_platform.database import create_engine, migrate, session_factory
from tienda_platform.grpc_server import GrpcServer, GrpcService, ServerConfig
from tienda_platform.messaging import create_broker
from tienda_platform.outbox import OutboxRelay
from tienda_platform.statement_spans import instrument_engine

from auth_service.adapters.passwords import AbstractPasswordHasher, Argon2PasswordHasher
from auth_service.config import Settings
from auth_service.domain.model import ServiceClients, TokenPolicy
from auth_service.entrypoints.grpc_servicer import PUBLIC_METHODS, SERVICE_NAME, AuthServicer
from auth_service.service_layer import services, signing_keys
from auth_service.service_layer.services import Clock, Dependencies
from auth_service.service_layer.unit_of_work import AbstractUnitOfWork, SqlUnitOfWork

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class AuthApp:
    """The wired service: its dependencies, its gRPC server, its outbox relay (None over a fake
    unit of work), and its start-up and clean-up."""

    settings: Settings
    deps: Dependencies
    server: GrpcServer
    engine: AsyncEngine | None
    relay: OutboxRelay | None = None
    broker: RedisBroker | None = None

    @property
    def background(self) -> list[Callable[[], Awaitable[None]]]:
        """Jobs that run while serving: the relay moving outbox events to Redis Streams."""
        return [] if self.relay is None else [self.relay.run]

    async def migrate(self) -> None:
        """Upgrade the database schema (nothing to do when the unit of work is a fake)."""
        if self.engine is not None:
            await migrate(MIGRATIONS_DIR, self.settings.database_url)

    async def prepare(self) -> None:
        """Everything before serving: migrations, a signing key, the bootstrap admin."""
        await self.migrate()
        await signing_keys.ensure_signing_key(deps=self.deps)
        email, password = (
            self.settings.bootstrap_admin_email,
            self.settings.bootstrap_admin_password,
        )
        if email is not None and password is not None:
            await services.bootstrap_admin(
                deps=self.deps, email=email, password=password.get_secret_value()
            )

    async def close(self) -> None:
        if self.broker is not None:
            await self.broker.stop()
        if self.engine is not None:
            await self.engine.dispose()


def bootstrap(
    *,
    settings: Settings,
    uow: Callable[[], AbstractUnitOfWork] | None = None,
    passwords: AbstractPasswordHasher | None = None,
    clock: Clock | None = None,
) -> AuthApp:
    """Build the service from settings; `uow`, `passwords` and `clock` replace the real ones."""
    engine = relay = broker = None
    read_uow: Callable[[], AbstractUnitOfWork] | None = None
    if uow is None:
        engine = create_engine(settings.database_url)
        instrument_engine(engine)
        # Connects lazily: a Redis outage delays events but never blocks start-up or writes.
        # FastStream's tracing and Prometheus middlewares, as in every publishing service
        broker = create_broker(settings.redis_url, service_name="auth_service")
        relay = OutboxRelay(engine=engine, broker=broker)
        uow = partial(SqlUnitOfWork, session_factory(engine), on_events=relay.notify)
        read_uow = partial(SqlUnitOfWork, session_factory(engine, read_only=True))
    deps = Dependencies(
        uow=uow,
        passwords=passwords
        or Argon2PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost_kib=settings.argon2_memory_cost_kib,
            parallelism=settings.argon2_parallelism,
        ),
        policy=TokenPolicy(
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
            access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
            refresh_ttl=timedelta(seconds=settings.refresh_token_ttl_seconds),
        ),
        clock=clock or _utc_now,
        service_clients=ServiceClients.from_secrets(settings.service_clients()),
        read_uow=read_uow,
    )

    async def own_jwks() -> dict[str, Any]:
        # Read from our own database: no network call to ourselves.
        return {"keys": await signing_keys.get_jwks(deps=deps)}

    verifier = TokenVerifier(
        JwksKeySource(own_jwks), issuer=settings.jwt_issuer, audience=settings.jwt_audience
    )
    servicer = AuthServicer(deps)
    server = GrpcServer(
        services=[
            GrpcService(
                name=SERVICE_NAME,
                register=lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(servicer, s),
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
    return AuthApp(
        settings=settings, deps=deps, server=server, engine=engine, relay=relay, broker=broker
    )
