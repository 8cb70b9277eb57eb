"""`python -m product_service` as a real process: serves, seeds the demo catalogue once (and
relays its product.created events), stops."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from product.v1 import product_pb2, product_pb2_grpc
from product_service.entrypoints.grpc_servicer import SERVICE_NAME
from product_service.service_layer.demo_catalogue import DEMO_PRODUCTS
from tienda_platform.database import create_engine
from tienda_platform.redis_server import free_port
from tienda_platform.testing import eventually

from .product_streams import all_sent, stream_events

pytestmark = pytest.mark.integration

START_TIMEOUT = 60


def _free_port() -> int:
    return free_port()


def _environment(
    database_url: str, redis_url: str, tmp_path: Path, grpc_port: int
) -> dict[str, str]:
    return {
        **os.environ,
        "REDIS_URL": redis_url,
        "TIENDA_DATA_DIR": str(tmp_path / "data"),
        "PRODUCT_DATABASE_URL": database_url,
        "PRODUCT_GRPC_PORT": str(grpc_port),
        "PRODUCT_METRICS_PORT": str(_free_port()),
        "PRODUCT_SEED_DEMO": "true",
        # Nothing listens there: the public reads this test makes need no token to verify.
        "AUTH_GRPC_TARGET": f"127.0.0.1:{_free_port()}",
        "SHUTDOWN_GRACE_SECONDS": "1",
    }


@asynccontextmanager
async def _running(env: dict[str, str], port: int) -> AsyncIterator[grpc.aio.Channel]:
    log = Path(env["TIENDA_DATA_DIR"]).with_name("product_service.log")
    with log.open("ab") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "product_service", env=env, stdout=output, stderr=output
        )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await _until_serving(channel)
            yield channel
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                returncode = await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()
            returncode = None
        # what the service logged says why it did not stop, or stopped badly
        assert returncode == 0, log.read_text()[-4000:]


async def _until_serving(channel: grpc.aio.Channel) -> None:
    # Polls Check: Watch (a streaming RPC) fails under the OpenTelemetry server interceptor.
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    async with asyncio.timeout(START_TIMEOUT):
        while True:
            reply = await health.Check(request, wait_for_ready=True)
            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                return
            await asyncio.sleep(0.05)


async def _catalogue(channel: grpc.aio.Channel) -> list[product_pb2.Product]:
    stub = product_pb2_grpc.ProductServiceStub(channel)
    return list((await stub.ListProducts(product_pb2.ListProductsRequest(page_size=100))).products)


async def test_demo_products_are_seeded_once_and_survive_a_restart(
    database_url: str, broker_url: str, tmp_path: Path
) -> None:
    port = _free_port()
    env = _environment(database_url, broker_url, tmp_path, port)
    engine = create_engine(database_url)
    try:
        async with _running(env, port) as channel:
            first = await _catalogue(channel)
            # The relay runs as a background job: the seeding's events reach the stream.
            await eventually(lambda: all_sent(engine))
    finally:
        await engine.dispose()
    assert sorted(p.sku for p in first) == sorted(p.sku for p in DEMO_PRODUCTS)
    events = await stream_events(broker_url)
    assert {e.envelope.type for e in events} == {"product.created"}
    assert sorted(e.envelope.subject for e in events) == sorted(f"products/{p.id}" for p in first)
    async with _running(env, port) as channel:
        assert await _catalogue(channel) == first
    assert len(await stream_events(broker_url)) == len(DEMO_PRODUCTS)


async def test_migrate_command_builds_the_schema_and_exits(tmp_path: Path) -> None:
    database = tmp_path / "fresh" / "product.db"
    env = {**os.environ, "PRODUCT_DATABASE_URL": f"sqlite+aiosqlite:///{database}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "product_service",
        "migrate",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(START_TIMEOUT):
        assert await process.wait() == 0
    with sqlite3.connect(database) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {
        "products",
        "reservations",
        "reservation_items",
        "outbox_events",
        "processed_events",
    } <= tables
