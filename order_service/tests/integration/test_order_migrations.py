"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import sys
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
from tienda_platform.testing import (
    POSTGRES_ENV,
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
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


# A replica starting: everything imported, it says so, and upgrades when told to.
_REPLICA = """
import asyncio, sys
from order_service.bootstrap import MIGRATIONS_DIR
from tienda_platform.database import migrate
print("ready", flush=True)
sys.stdin.readline()
asyncio.run(migrate(MIGRATIONS_DIR, sys.argv[1]))
"""


@pytest.mark.postgres
async def test_replicas_that_start_together_on_postgresql_migrate_one_after_the_other() -> None:
    """Four processes upgrade one empty database at the same moment, as the replicas of a
    Deployment do: all succeed, and the schema is the models' (without the migrations' lock,
    replicas fail on the tables and types another has just created)."""
    server = postgres_server_url()
    if server is None:
        pytest.skip(f"{POSTGRES_ENV} is not set; .ci/run sets it")
    url = await create_postgres_database(server)
    replicas: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(4):
            replicas.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    _REPLICA,
                    url,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                )
            )
        for replica in replicas:
            assert replica.stdout is not None
            assert await asyncio.wait_for(replica.stdout.readline(), 60) == b"ready\n"
        outputs = await asyncio.wait_for(
            asyncio.gather(*(replica.communicate(b"go\n") for replica in replicas)), 120
        )
        errors = [
            [line for line in out.decode().splitlines() if "Error:" in line][-1:]
            for replica, (out, _) in zip(replicas, outputs, strict=True)
            if replica.returncode
        ]
        assert errors == []
        assert await schema_diff(url) == []
    finally:
        for replica in replicas:
            if replica.returncode is None:
                replica.kill()
                await replica.wait()
        await drop_postgres_database(url)
