"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from order_service.adapters import orm
from order_service.bootstrap import MIGRATIONS_DIR
from sqlalchemy import inspect
from tienda_platform.database import (
    PLATFORM_METADATA,
    alembic_config,
    combined_metadata,
    create_engine,
    migrate,
)

pytestmark = pytest.mark.integration


async def schema_diff(url: str) -> list[Any]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(sync, opts={"compare_type": True}),
                    combined_metadata(orm.metadata, PLATFORM_METADATA),
                )
            )
    finally:
        await engine.dispose()


async def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await engine.dispose()


async def test_the_migrated_schema_matches_the_models(database_url: str) -> None:
    await migrate(MIGRATIONS_DIR, database_url)
    assert await schema_diff(database_url) == []
    assert {
        "orders",
        "order_items",
        "payments",
        "order_sagas",
        "payment_charges",
        "customers",
        "order_summaries",
        "order_summary_customers",
        "outbox_events",
        "processed_events",
    } <= await table_names(database_url)


async def test_migrating_twice_is_harmless_and_downgrade_removes_everything(
    database_url: str,
) -> None:
    await migrate(MIGRATIONS_DIR, database_url)
    await migrate(MIGRATIONS_DIR, database_url)
    config = alembic_config(MIGRATIONS_DIR, database_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await table_names(database_url) == {"alembic_version"}
    await migrate(MIGRATIONS_DIR, database_url)
    assert await schema_diff(database_url) == []
