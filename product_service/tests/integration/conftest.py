"""Fixtures over a real, migrated database (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from product_service.bootstrap import ProductApp, bootstrap
from product_service.service_layer.services import Dependencies
from tienda_platform.testing import TokenMint

from .factories import settings_for


@pytest.fixture
async def broker_url(embedded_redis: Any) -> str:
    """The embedded Redis, emptied: for tests that need the broker running but whose subject
    is not the events (those take `redis_url`, which also covers the machine's Redis)."""
    client = redis.Redis.from_url(embedded_redis.url)
    await client.flushdb()
    await client.aclose()
    return str(embedded_redis.url)


@pytest.fixture
async def app(
    database_url: str, broker_url: str, tmp_path: Path, token_mint: TokenMint
) -> AsyncIterator[ProductApp]:
    """product_service on a migrated database, its consumer declared and its broker started;
    its server and its background jobs (the relay) are not started."""
    app = bootstrap(
        settings=settings_for(database_url, tmp_path, redis_url=broker_url),
        verifier=token_mint.verifier(),
    )
    await app.prepare()
    try:
        yield app
    finally:
        await app.close()


@pytest.fixture
def deps(app: ProductApp) -> Dependencies:
    return app.deps
