"""tienda_platform.database.unreachable on real PostgreSQL failures: the database could not
be reached and nothing committed (a request may be sent again), or not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.database import create_engine, unreachable
from tienda_platform.redis_server import free_port
from tienda_platform.testing import end_connections

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The service's engine on a table with one row."""
    engine = create_engine(database_url)
    async with engine.begin() as connection:
        await connection.execute(sa.text("CREATE TABLE stock (sku TEXT PRIMARY KEY, units INT)"))
        await connection.execute(sa.text("INSERT INTO stock VALUES ('mug', 5)"))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _raised(work: Awaitable[object]) -> BaseException:
    try:
        await work
    except Exception as error:
        return error
    raise AssertionError("no error")


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_lost_during_a_statement_or_at_rollback_is_unreachable_at_commit_is_not(
    engine: AsyncEngine, database_url: str
) -> None:
    async def update_while_locked() -> None:
        async with engine.connect() as holder, holder.begin():
            await holder.execute(sa.text("SELECT units FROM stock WHERE sku = 'mug' FOR UPDATE"))

            async def update() -> None:
                async with engine.begin() as connection:
                    await connection.execute(sa.text("UPDATE stock SET units = units - 1"))

            waiting = asyncio.ensure_future(update())
            for _ in range(200):
                if await end_connections(database_url, waiting_on_a_lock=True):
                    break
                await asyncio.sleep(0.05)
            else:
                waiting.cancel()
                raise AssertionError("the update never waited on the lock")
            await waiting

    during = await _raised(update_while_locked())
    assert isinstance(during, DBAPIError) and during.statement is not None
    assert unreachable(during)

    async def end_before_commit() -> None:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(sa.text("UPDATE stock SET units = units - 1"))
            assert await end_connections(database_url) >= 1
            await transaction.commit()

    at_commit = await _raised(end_before_commit())
    assert isinstance(at_commit, DBAPIError) and at_commit.connection_invalidated
    assert not unreachable(at_commit)  # for all the service knows, the COMMIT took effect

    async def end_before_rollback() -> None:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            await connection.execute(sa.text("UPDATE stock SET units = units - 1"))
            assert await end_connections(database_url) >= 1
            await transaction.rollback()

    at_rollback = await _raised(end_before_rollback())
    assert isinstance(at_rollback, DBAPIError) and at_rollback.statement is None
    assert unreachable(at_rollback)  # nothing can have been committed

    async def duplicate() -> None:
        async with engine.begin() as connection:
            await connection.execute(sa.text("INSERT INTO stock VALUES ('mug', 1)"))

    assert not unreachable(await _raised(duplicate()))
    async with engine.connect() as connection:  # nothing above changed the row
        assert await connection.scalar(sa.text("SELECT units FROM stock")) == 5


async def test_a_server_not_listening_or_not_accepting_yet_is_unreachable() -> None:
    engine = create_engine(f"postgresql+asyncpg://tienda@127.0.0.1:{free_port()}/none")
    try:

        async def query() -> None:
            async with engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))

        assert unreachable(await _raised(query()))
    finally:
        await engine.dispose()
    # what asyncpg raises while the server starts up or shuts down (SQLSTATE 57P03),
    # as SQLAlchemy's asyncpg dialect wraps it
    starting = asyncpg.exceptions.CannotConnectNowError("the database system is starting up")
    wrapped = Exception("the database system is starting up")
    wrapped.__cause__ = starting
    assert unreachable(DBAPIError(None, None, wrapped))
    assert not unreachable(ValueError("not a database error"))
