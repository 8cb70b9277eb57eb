"""product.v1.ProductService when its database cannot be reached: UNAVAILABLE (which callers
retry) when nothing was committed, and the same call succeeds once the database is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from product.v1 import product_pb2, product_pb2_grpc
from product_service.bootstrap import ProductApp, bootstrap
from sqlalchemy.ext.asyncio import create_async_engine
from tienda_platform.ids import new_id
from tienda_platform.redis_server import free_port
from tienda_platform.testing import TokenMint, end_connections

from .factories import settings_for

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]


@asynccontextmanager
async def serving(
    database_url: str, broker_url: str, tmp_path: Path, token_mint: TokenMint, *, prepare: bool
) -> AsyncIterator[tuple[ProductApp, product_pb2_grpc.ProductServiceStub]]:
    """The service's gRPC server on database_url, and a stub over a plain channel (one that
    does not retry by itself, so that each answer is seen)."""
    app = bootstrap(
        settings=settings_for(database_url, tmp_path, redis_url=broker_url),
        verifier=token_mint.verifier(),
    )
    await app.server.start()
    try:
        if prepare:
            await app.prepare()
            await app.server.mark_serving()
        target = f"127.0.0.1:{app.server.bound_port}"
        async with grpc.aio.insecure_channel(target) as channel:
            yield app, product_pb2_grpc.ProductServiceStub(channel)
    finally:
        await app.server.stop()
        await app.close()


def _tokens(token_mint: TokenMint) -> tuple[Metadata, Metadata]:
    admin = (("authorization", f"Bearer {token_mint.token(new_id(), 'admin')}"),)
    service = (("authorization", f"Bearer {token_mint.token('service:order_service', 'service')}"),)
    return admin, service


async def test_a_database_refusing_connections_makes_calls_unavailable(
    broker_url: str, tmp_path: Path, token_mint: TokenMint
) -> None:
    """A PostgreSQL server that is not listening (nothing on the port): every call that needs
    the database answers UNAVAILABLE, not INTERNAL, and the channel stays usable."""
    down = f"postgresql+asyncpg://tienda@127.0.0.1:{free_port()}/product"
    async with serving(down, broker_url, tmp_path, token_mint, prepare=False) as (_, stub):
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.GetProduct(product_pb2.GetProductRequest(id=new_id()))
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert caught.value.details() == (
                "the database cannot be reached; nothing was changed, try again"
            )


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_a_connection_lost_mid_statement_is_unavailable_and_the_retry_reserves_once(
    database_url: str, broker_url: str, tmp_path: Path, token_mint: TokenMint
) -> None:
    """PostgreSQL ends the service's connection while its ReserveStock waits on a row lock
    (as a restart or failover would): the call is UNAVAILABLE, the reservation rolled back;
    the same call, sent again, reserves once. Connections the pool held idle when the server
    ended them are replaced without a failed call (pool_pre_ping)."""
    holder = create_async_engine(database_url)
    admin_md, service = _tokens(token_mint)
    try:
        async with serving(database_url, broker_url, tmp_path, token_mint, prepare=True) as (
            _,
            stub,
        ):
            product = await stub.CreateProduct(
                product_pb2.CreateProductRequest(
                    product=product_pb2.Product(
                        sku="MUG-1", name="Ceramic mug", price_cents=1299, stock=5
                    )
                ),
                metadata=admin_md,
            )
            # every connection the service's pool holds, idle, ended by the server
            assert await end_connections(database_url) >= 1
            fetched = await stub.GetProduct(product_pb2.GetProductRequest(id=product.id))
            assert fetched.stock == 5

            reserve = product_pb2.ReserveStockRequest(
                order_id=new_id(),
                items=[product_pb2.StockItem(product_id=product.id, quantity=2)],
            )
            async with holder.connect() as held:
                await held.execute(
                    sa.text("SELECT stock FROM products WHERE id = :id FOR UPDATE"),
                    {"id": product.id},
                )
                call = asyncio.ensure_future(stub.ReserveStock(reserve, metadata=service))
                await _until(lambda: end_connections(database_url, waiting_on_a_lock=True))
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                await held.rollback()

            again = await stub.ReserveStock(reserve, metadata=service)
            assert again.status == product_pb2.RESERVATION_STATUS_RESERVED
            assert (await stub.ReserveStock(reserve, metadata=service)) == again
            fetched = await stub.GetProduct(product_pb2.GetProductRequest(id=product.id))
            assert fetched.stock == 3
    finally:
        await holder.dispose()


async def _until(probe: Callable[[], Awaitable[int]], within: float = 10.0) -> None:
    """Until probe() returns a count above 0."""
    deadline = time.monotonic() + within
    while not await probe():
        assert time.monotonic() < deadline, "the call never waited on the row lock"
        await asyncio.sleep(0.05)
