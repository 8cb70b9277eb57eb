"""SQLite transactions: writers take the write lock at BEGIN, queries do not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.database import create_engine, session_factory

pytestmark = pytest.mark.integration


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE stock (sku TEXT PRIMARY KEY, units INT)"))
        await conn.execute(sa.text("INSERT INTO stock VALUES ('mug', 5)"))
    yield engine
    await engine.dispose()


async def test_a_query_reads_the_last_commit_while_a_writer_holds_the_lock(
    engine: AsyncEngine,
) -> None:
    writers, readers = session_factory(engine), session_factory(engine, read_only=True)
    async with writers() as writer, writer.begin():
        await writer.exec(sa.text("UPDATE stock SET units = 4"))  # type: ignore[call-overload]
        # the writer's transaction is open and holds the write lock; a query does not queue
        # behind it (a BEGIN IMMEDIATE would wait up to the 30 s busy timeout)
        async with readers() as reader:
            units = await asyncio.wait_for(
                reader.scalar(sa.text("SELECT units FROM stock")), timeout=5
            )
        assert units == 5
    async with readers() as reader:
        assert await reader.scalar(sa.text("SELECT units FROM stock")) == 4
