"""The migrations build exactly the tables the models describe."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from product_service.adapters.orm import ProductTable
from product_service.bootstrap import MIGRATIONS_DIR
from sqlalchemy import inspect
from tienda_platform.consumers import ProcessedEvent
from tienda_platform.database import PLATFORM_METADATA, combined_metadata, create_engine, migrate
from tienda_platform.outbox import OutboxEvent

pytestmark = pytest.mark.integration


async def test_migrations_match_the_models(database_url: str) -> None:
    await migrate(MIGRATIONS_DIR, database_url)
    await migrate(MIGRATIONS_DIR, database_url)  # a second run is a no-op
    engine = create_engine(database_url)

    def diff(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(
            context, combined_metadata(ProductTable.metadata, PLATFORM_METADATA)
        )

    def tables(connection: Any) -> set[str]:
        return set(inspect(connection).get_table_names())

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
            assert await connection.run_sync(tables) == {
                "alembic_version",
                "products",
                "reservations",
                "reservation_items",
                OutboxEvent.__tablename__,
                ProcessedEvent.__tablename__,
            }
    finally:
        await engine.dispose()
