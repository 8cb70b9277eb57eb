"""order_service running with its background jobs, set up for the notification tests: real
database, real Redis, webhook deliveries allowed to 127.0.0.1 and quick retries."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message
from order.v1 import order_pb2, order_pb2_grpc
from order_service.bootstrap import OrderApp, bootstrap
from order_service.config import Settings
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.aio import cancel_and_wait
from tienda_platform.events import EventEnvelope, build_envelope, stream_of
from tienda_platform.testing import TokenMint

from ..unit.fakes import FakeProductCatalog


def notification_settings(*, database_url: str, redis_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "redis_url": redis_url,
        "bind_host": "127.0.0.1",
        "webhook_allow_private": True,
        "webhook_timeout_seconds": 5.0,
        "delivery_retry_base_seconds": 0.2,
        "delivery_retry_max_seconds": 0.4,
        "payment_timeout_seconds": 0.2,
        "saga_poll_seconds": 0.05,
        **overrides,
    }
    return Settings(**values)


@dataclass
class RunningService:
    app: OrderApp
    stub: order_pb2_grpc.OrderServiceStub
    mint: TokenMint

    @property
    def engine(self) -> AsyncEngine:
        assert self.app.engine is not None
        return self.app.engine

    def auth(self, user_id: str, role: str = "customer") -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.mint.token(user_id, role)}"),)

    async def create_webhook(
        self, owner: str, url: str, *event_types: str, role: str = "customer"
    ) -> order_pb2.Webhook:
        return await self.stub.CreateWebhook(
            order_pb2.CreateWebhookRequest(
                webhook=order_pb2.Webhook(url=url, event_types=list(event_types))
            ),
            metadata=self.auth(owner, role),
        )

    async def deliveries(
        self, webhook_id: str, owner: str, role: str = "customer"
    ) -> list[order_pb2.WebhookDelivery]:
        response = await self.stub.ListWebhookDeliveries(
            order_pb2.ListWebhookDeliveriesRequest(id=webhook_id), metadata=self.auth(owner, role)
        )
        return list(response.deliveries)

    async def publish(
        self, event_type: str, subject: str, payload: Message, *, source: str = "tests"
    ) -> EventEnvelope:
        """Publish an event as its owning service would (straight to its stream)."""
        envelope = build_envelope(
            event_type=event_type, source=source, subject=subject, payload=payload
        )
        await self.republish(envelope)
        return envelope

    async def republish(self, envelope: EventEnvelope) -> None:
        assert self.app.broker is not None
        await self.app.broker.publish(envelope.SerializeToString(), stream=stream_of(envelope.type))


@contextlib.asynccontextmanager
async def run_service(
    settings: Settings, *, mint: TokenMint, catalog: FakeProductCatalog | None = None
) -> AsyncIterator[RunningService]:
    """Serve on a free port with every background job; stop everything on exit."""
    app = bootstrap(
        settings=settings, catalog=catalog or FakeProductCatalog(), verifier=mint.verifier()
    )
    server = app.grpc_server(port=0, metrics=False)
    await server.start()
    await app.prepare()
    # The first connection turns the fresh SQLite file to WAL; made here, alone, it does not
    # race the background jobs' first connections for that exclusive switch.
    async with app.engine.connect() as connection:  # type: ignore[union-attr]
        await connection.exec_driver_sql("SELECT 1")
    jobs = [asyncio.create_task(job()) for job in app.background]
    await server.mark_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}")
    try:
        yield RunningService(app, order_pb2_grpc.OrderServiceStub(channel), mint)
    finally:
        await channel.close()
        await server.stop()
        await cancel_and_wait(jobs)
        await app.cleanup()
