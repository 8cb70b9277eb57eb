"""Fixtures over a real, migrated database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from auth.v1 import auth_pb2_grpc
from auth_service.bootstrap import AuthApp, bootstrap
from auth_service.config import Settings
from tienda_platform.redis_server import free_port

ADMIN_EMAIL = "root@example.com"
ADMIN_PASSWORD = "root-password-2024"
SERVICE_SECRETS = {"order_service": "order-secret-" + "o" * 32, "product_service": "p" * 32}


@pytest.fixture
def admin_credentials() -> tuple[str, str]:
    """Email and password of the bootstrap admin that `settings` configures."""
    return ADMIN_EMAIL, ADMIN_PASSWORD


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The test database, any free port, no metrics, cheap argon2, a bootstrap admin, two
    service clients, and a Redis that is not there (tests of events bring their own)."""
    return Settings(
        environment="test",
        database_url=database_url,
        data_dir=tmp_path,
        grpc_port=0,
        metrics_port=None,
        argon2_time_cost=1,
        argon2_memory_cost_kib=8,
        argon2_parallelism=1,
        shutdown_grace_seconds=0.5,
        bootstrap_admin_email=ADMIN_EMAIL,
        bootstrap_admin_password=ADMIN_PASSWORD,
        service_client_secrets=",".join(f"{k}:{v}" for k, v in SERVICE_SECRETS.items()),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[AuthApp]:
    """auth_service on a prepared database (migrated, keyed, admin); its server is not started."""
    app = bootstrap(settings=settings)
    await app.prepare()
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
async def stub(app: AuthApp) -> AsyncIterator[auth_pb2_grpc.AuthServiceStub]:
    """A client of `app`'s server, started on a free port."""
    await app.server.start()
    await app.server.mark_serving()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.bound_port}")
    try:
        yield auth_pb2_grpc.AuthServiceStub(channel)
    finally:
        await channel.close()
        await app.server.stop()
