"""Settings and products for the integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from product_service.bootstrap import ProductApp, bootstrap
from product_service.config import Settings
from product_service.domain.model import Product
from product_service.service_layer import services
from product_service.service_layer.services import Dependencies
from tienda_platform.aio import cancel_and_wait
from tienda_platform.auth import Principal
from tienda_platform.redis_server import free_port
from tienda_platform.testing import TokenMint

ADMIN = Principal(user_id="00000000-0000-7000-8000-000000000001", role="admin", token="unused")


def settings_for(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings for tests: the given database, any free port, no metrics (and a Redis that
    is not there unless `redis_url` names one)."""
    values: dict[str, Any] = {
        "environment": "test",
        "database_url": database_url,
        "data_dir": tmp_path,
        "grpc_port": 0,
        "metrics_port": None,
        "shutdown_grace_seconds": 0.5,
        "redis_url": f"redis://127.0.0.1:{free_port()}/0",
        **overrides,
    }
    return Settings(**values)


async def create_product(
    deps: Dependencies, sku: str, stock: int, price_cents: int = 100
) -> Product:
    """A product created the way an admin would."""
    return await services.create_product(
        deps=deps,
        caller=ADMIN,
        sku=sku,
        name=f"Product {sku}",
        description="",
        price_cents=price_cents,
        stock=stock,
    )


@asynccontextmanager
async def running(settings: Settings, token_mint: TokenMint) -> AsyncIterator[ProductApp]:
    """product_service prepared (consumer declared, broker started) with its background jobs
    (outbox relay, stream gauges) running, as `python -m product_service` runs it."""
    app = bootstrap(settings=settings, verifier=token_mint.verifier())
    await app.prepare()
    jobs = [asyncio.create_task(job()) for job in app.background]
    try:
        yield app
    finally:
        await cancel_and_wait(jobs)
        await app.close()


async def change_product(
    deps: Dependencies, product_id: str, *, etag: str = "", **changes: Any
) -> Product:
    """UpdateProduct's use case, as an admin, changing only the fields given (the mask)."""
    values: dict[str, Any] = {
        "sku": "",
        "name": "",
        "description": "",
        "price_cents": 0,
        "stock": 0,
        **changes,
    }
    return await services.update_product(
        deps=deps,
        caller=ADMIN,
        product_id=product_id,
        update_mask=list(changes),
        etag=etag,
        **values,
    )
