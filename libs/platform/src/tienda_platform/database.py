"""Async SQLAlchemy engines for SQLite and PostgreSQL, and Alembic migrations at start-up."""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

from tienda_platform import sqlite


class PlatformTable(SQLModel, registry=registry()):
    """Base of the tables every service has (outbox, processed events). Services keep their own
    tables in a registry of their own too, so that one process can hold several services'
    models without mixing their schemas."""


PLATFORM_METADATA = PlatformTable.metadata


Row = TypeVar("Row", bound=SQLModel)


def new_row(model: type[Row], **values: Any) -> Row:
    """A new row of model built through SQLAlchemy's instrumentation alone, for rows written
    on every command or event (outbox, processed events): SQLModel's validating constructor
    costs ten times as much as setting the values the INSERT reads, and these values are the
    code's own, not input to validate."""
    row: Row = model._sa_class_manager.new_instance()  # type: ignore[attr-defined]
    row.__dict__.update(values)
    return row


def combined_metadata(*metadatas: MetaData) -> MetaData:
    """One MetaData holding the tables of all of these (for schema comparisons)."""
    combined = MetaData()
    for metadata in metadatas:
        for table in metadata.tables.values():
            table.to_metadata(combined)
    return combined


# SQLSTATEs of a server that cannot take the connection or the statement right now: class 08
# (connection exceptions), shutting down or starting up (57P01-57P03), too many connections.
_UNREACHABLE_SQLSTATES = ("08", "57P01", "57P02", "57P03", "53300")


# Connections whose COMMIT has been sent and not yet answered (see _mark_failures_at_commit).
_COMMITTING: weakref.WeakSet[Any] = weakref.WeakSet()
# Set on an error that ended a connection during its COMMIT: the outcome is unknown.
AT_COMMIT = "tienda_at_commit"


def _mark_failures_at_commit(engine: AsyncEngine) -> None:
    """Mark the errors raised while a COMMIT was under way (`AT_COMMIT`): SQLAlchemy reports a
    connection lost at BEGIN, at COMMIT and at ROLLBACK alike (no statement), and only the
    COMMIT leaves the outcome unknown."""

    @event.listens_for(engine.sync_engine, "commit")
    def _committing(connection: Any) -> None:
        _COMMITTING.add(connection)

    @event.listens_for(engine.sync_engine, "begin")
    def _begun(connection: Any) -> None:
        _COMMITTING.discard(connection)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _failed(context: ExceptionContext) -> None:
        connection = context.connection
        if connection is not None and connection in _COMMITTING:
            _COMMITTING.discard(connection)
            if context.sqlalchemy_exception is not None:
                setattr(context.sqlalchemy_exception, AT_COMMIT, True)


def unreachable(error: BaseException) -> bool:
    """Whether `error` says the database could not be reached, so that the transaction
    certainly did not commit and the same request may simply be sent again: the connection
    was refused or could not be opened, or it was lost at BEGIN, during a statement or at
    ROLLBACK (the server rolls back a transaction whose connection ends before COMMIT).

    A connection lost during COMMIT itself is not one of these: the server may have committed
    before the answer was lost, so the outcome is unknown, and sending the request again could
    do it twice."""
    if isinstance(error, ConnectionError):  # refused or reset before a connection existed
        return True
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:
        return not getattr(error, AT_COMMIT, False)
    cause = error.orig.__cause__ if error.orig is not None else None
    sqlstate = str(getattr(cause, "sqlstate", "") or "")
    return sqlstate.startswith(_UNREACHABLE_SQLSTATES)


def connection_lost(error: BaseException) -> bool:
    """Whether the database connection failed: refused, or lost at any point, COMMIT
    included. An outage of the database, not a fault of the code; work that is idempotent
    may simply run again."""
    return unreachable(error) or (isinstance(error, DBAPIError) and error.connection_invalidated)


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


# Execution option of sessions that only read (see session_factory).
READ_ONLY = "tienda_read_only"
# How long a SQLite writer waits for the write lock before failing.
SQLITE_BUSY_SECONDS = 30


def advisory_lock_key(name: str) -> int:
    """The 64-bit key of a PostgreSQL advisory lock named `name` (a hash: two names that
    collided would only make unrelated transactions take turns)."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def create_engine(url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine. On SQLite: statements run in the event loop's thread (see
    tienda_platform.sqlite), WAL, a busy timeout, foreign keys, and transactions that take
    the write lock at BEGIN (BEGIN IMMEDIATE), so concurrent writers queue instead of failing
    when a read lock is upgraded; a read-only session's transactions begin deferred, so reads
    never wait for the write lock and run beside a writer (WAL)."""
    if not is_sqlite(url):
        kwargs.setdefault("pool_size", 10)
        kwargs.setdefault("max_overflow", 10)
        kwargs.setdefault("pool_pre_ping", True)
        engine = create_async_engine(url, **kwargs)
        _mark_failures_at_commit(engine)
        return engine
    parsed = make_url(url)
    database = parsed.database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    # the file name and flags (uri=...) as sqlite3.connect takes them from this URL
    (filename, *_), connect_args = parsed.get_dialect()().create_connect_args(parsed)
    kwargs.setdefault(
        "async_creator",
        sqlite.creator(filename, busy_timeout_ms=SQLITE_BUSY_SECONDS * 1000, **connect_args),
    )
    # the pool's reset on return is the handler below
    kwargs.setdefault("pool_reset_on_return", None)
    engine = create_async_engine(url, **kwargs)

    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection: Any, _record: Any, _state: Any) -> None:
        # A connection goes back to the pool with no transaction open: the pool's default
        # reset rolls back anyway, after every commit. SQLite knows whether a transaction is
        # open; roll back only then.
        if dbapi_connection.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        # on the DBAPI cursor: transaction control is no statement worth a span or events
        cursor = connection.connection.cursor()
        try:
            cursor.execute("BEGIN" if read_only else "BEGIN IMMEDIATE")
        finally:
            cursor.close()

    return engine


def session_factory(
    engine: AsyncEngine, *, read_only: bool = False
) -> async_sessionmaker[AsyncSession]:
    """Sessions over the engine. `read_only=True` is for queries: on SQLite their
    transactions do not take the write lock, so they neither queue behind writers nor make
    writers queue behind them; nothing stops them writing, so give them only to queries."""
    return async_sessionmaker(
        engine,
        class_=AsyncSession,
        expire_on_commit=False,
        execution_options={READ_ONLY: True} if read_only else {},
    )


MIGRATIONS_LOCK_KEY = advisory_lock_key("tienda_platform.database.migrate")


def alembic_config(migrations_dir: Path, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


async def migrate(migrations_dir: Path, url: str) -> None:
    """Upgrade the database to the newest revision (run in a thread: Alembic is synchronous).
    On PostgreSQL, replicas that start at once upgrade one after the other (an advisory lock
    held by the upgrade's transaction)."""
    if is_sqlite(url) and (database := make_url(url).database) and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(command.upgrade, alembic_config(migrations_dir, url), "head")


def run_migrations_in_env(target_metadata: Any) -> None:
    """The body of every service's migrations/env.py: run online with an async engine.

    target_metadata: the service's MetaData, or a list with PLATFORM_METADATA when the service
    uses the outbox or event consumers."""
    from alembic import context

    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None

    def do_run(connection: Any) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=is_sqlite(url),
            compare_type=True,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Replicas that start together take turns: the first upgrades (in one
                # transaction: PostgreSQL's DDL is transactional), the others then find the
                # schema at head. Without the lock they would all create the same tables.
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK_KEY}
                )
            context.run_migrations()

    async def run() -> None:
        engine = create_async_engine(url)
        async with engine.connect() as connection:
            await connection.run_sync(do_run)
            await connection.commit()
        await engine.dispose()

    asyncio.run(run())
