"""Fixtures of the integration tests: a migrated database and units of work over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest
from order_service.bootstrap import MIGRATIONS_DIR
from order_service.service_layer.unit_of_work import SqlUnitOfWork
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.database import create_engine, migrate, session_factory


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await migrate(MIGRATIONS_DIR, database_url)
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
def uow_factory(engine: AsyncEngine) -> Callable[[], SqlUnitOfWork]:
    sessions = session_factory(engine)
    return lambda: SqlUnitOfWork(sessions)
