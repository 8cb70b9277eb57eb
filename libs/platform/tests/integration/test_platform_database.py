"""SQLite transactions: writers take the write lock at BEGIN, queries do not."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform import sqlite
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


@contextmanager
def watching_lock_waits(seen: Callable[[], object]) -> Iterator[None]:
    """Call `seen`, from the waiting thread, each time a writer waits for the write lock in a
    lock waiter's thread (the path for a lock another engine or process holds)."""
    original = sqlite.Connection._waiting

    def waiting(self: sqlite.Connection, connection: Any, call: Any) -> Any:
        seen()
        return original(self, connection, call)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sqlite.Connection, "_waiting", waiting)
        yield


async def connections(path: Path, count: int, *, busy_timeout_ms: int) -> list[sqlite.Connection]:
    connect = sqlite.creator(str(path), busy_timeout_ms=busy_timeout_ms)
    return [await connect() for _ in range(count)]


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


async def test_with_tracing_on_every_engine_is_traced_and_pool_checkouts_are_not(
    engine: AsyncEngine,
) -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from sqlalchemy.engine import Engine
    from tienda_platform import statement_spans, telemetry

    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    collected = InMemorySpanExporter()
    telemetry.record_spans(SimpleSpanProcessor(collected))
    # any number of engines, each with its spans; no wrapper around Engine.connect, which
    # made a span (dropped by the sampler, yet made) at every checkout from the pool
    other = create_engine("sqlite+aiosqlite://")
    statement_spans.instrument_engine(other)
    statement_spans.instrument_engine(engine)
    assert not hasattr(Engine.connect, "__wrapped__")

    with telemetry.tracer.start_as_current_span("request"):
        async with session_factory(engine)() as session, session.begin():
            await session.exec(sa.text("UPDATE stock SET units = 3"))  # type: ignore[call-overload]

        async with other.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
    await other.dispose()

    names = [span.name for span in collected.get_finished_spans()]
    assert "request" in names
    assert any(name.startswith("UPDATE") for name in names), names
    assert any(name.startswith("SELECT") for name in names), names
    assert "connect" not in names


def _tracer_asked(sampler: Any) -> tuple[Any, Any, list[str]]:
    """A tracer sampling with sampler, its exporter, and the names of the spans it was asked
    to sample (every span started, kept or not)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import Sampler

    asked: list[str] = []

    class Asked(Sampler):
        def should_sample(self, parent: Any, trace_id: int, name: str, *args: Any) -> Any:
            asked.append(name)
            return sampler.should_sample(parent, trace_id, name, *args)

        def get_description(self) -> str:
            return "Asked"

    provider = TracerProvider(sampler=Asked())
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter, asked


async def test_a_statement_span_has_the_database_attributes_and_errors_are_marked(
    tmp_path: Path,
) -> None:
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    from opentelemetry.trace import SpanKind, StatusCode
    from tienda_platform.statement_spans import StatementTracer

    tracer, exporter, _ = _tracer_asked(ALWAYS_ON)
    path = tmp_path / "traced.sqlite"
    traced = create_engine(f"sqlite+aiosqlite:///{path}")
    StatementTracer(traced.sync_engine, tracer)
    with tracer.start_as_current_span("request"):
        async with traced.begin() as connection:
            await connection.execute(sa.text("/* why */ CREATE TABLE t (x INT PRIMARY KEY)"))
            await connection.execute(sa.text("INSERT INTO t VALUES (1)"))
        with pytest.raises(sa.exc.IntegrityError):
            async with traced.begin() as connection:
                await connection.execute(sa.text("INSERT INTO t VALUES (1)"))
    await traced.dispose()

    spans = [span for span in exporter.get_finished_spans() if span.name != "request"]
    # named after the table, as the database semantic conventions name them
    assert [span.name for span in spans] == ["CREATE t", "INSERT t", "INSERT t"]
    assert all(span.kind is SpanKind.CLIENT for span in spans)
    assert spans[1].attributes == {
        "db.system": "sqlite",
        "db.name": str(path),
        "db.statement": "INSERT INTO t VALUES (1)",
    }
    assert spans[1].status.status_code is StatusCode.UNSET
    assert spans[2].status.status_code is StatusCode.ERROR
    assert "UNIQUE" in (spans[2].status.description or "")


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("SELECT orders.id, orders.update_time FROM orders WHERE orders.id = ?", "SELECT orders"),
        ('select o.id from "order_summaries" AS o JOIN orders ON 1', "SELECT order_summaries"),
        (
            "INSERT INTO outbox_events (id) VALUES (?) ON CONFLICT DO UPDATE SET id = 1",
            "INSERT outbox_events",
        ),
        ("UPDATE order_sagas SET step=? WHERE order_sagas.order_id = ?", "UPDATE order_sagas"),
        ("DELETE FROM processed_events WHERE processed_time < ?", "DELETE processed_events"),
        ("/* a comment */ SELECT 1", "SELECT shop"),
        ("PRAGMA foreign_keys=ON", "PRAGMA shop"),
    ],
)
def test_a_statement_span_is_named_after_its_operation_and_table(
    tmp_path: Path, statement: str, name: str
) -> None:
    """Wherever the data folder is: a statement on no table names the database, for a SQLite
    file its name alone."""
    from tienda_platform.statement_spans import StatementTracer

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    assert StatementTracer(engine.sync_engine)._name(statement) == name


def test_a_statement_name_is_worked_out_once_per_statement_as_given(tmp_path: Path) -> None:
    """The cache is keyed by the statement SQLAlchemy passes, leading comment and all."""
    from tienda_platform.statement_spans import StatementTracer

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'shop.db'}")
    tracer = StatementTracer(engine.sync_engine)
    statement = "/* why */ SELECT units FROM stock"
    assert tracer._name(statement) == "SELECT stock"
    assert tracer._names == {statement: "SELECT stock"}


async def test_a_statement_outside_a_kept_trace_starts_no_span(engine: AsyncEngine) -> None:
    """Outside any trace, or in a trace that is not kept, a statement's span would be dropped:
    it is not even started (the sampler is never asked about it)."""
    from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
    from tienda_platform.statement_spans import StatementTracer
    from tienda_platform.telemetry import QuietSampler

    tracer, exporter, asked = _tracer_asked(QuietSampler(ParentBasedTraceIdRatio(0.0)))
    StatementTracer(engine.sync_engine, tracer)
    async with engine.connect() as connection:
        await connection.execute(sa.text("SELECT units FROM stock"))  # outside any trace
    with tracer.start_as_current_span("request"):  # a trace that is not kept
        async with engine.connect() as connection:
            await connection.execute(sa.text("SELECT units FROM stock"))

    assert asked == ["request"]
    assert exporter.get_finished_spans() == ()


async def test_a_connection_goes_back_to_the_pool_rolled_back_only_when_a_transaction_is_open(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollbacks = 0
    rollback = sqlite.Connection.rollback

    async def counted(self: sqlite.Connection) -> None:
        nonlocal rollbacks
        rollbacks += 1
        await rollback(self)

    monkeypatch.setattr(sqlite.Connection, "rollback", counted)
    writers = session_factory(engine)
    async with writers() as writer, writer.begin():
        await writer.exec(sa.text("UPDATE stock SET units = 4"))  # type: ignore[call-overload]
    # committed: nothing to roll back
    assert rollbacks == 0

    # a transaction the pool does not know of is still rolled back when the connection returns
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("BEGIN IMMEDIATE")
        await driver.execute("UPDATE stock SET units = 0")
    assert rollbacks == 1
    async with session_factory(engine, read_only=True)() as reader:
        assert await reader.scalar(sa.text("SELECT units FROM stock")) == 4


async def test_statements_run_in_the_event_loops_thread(engine: AsyncEngine) -> None:
    threads: list[int] = []
    async with engine.connect() as connection:
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert isinstance(driver, sqlite.Connection)
        await driver.create_function("thread", 0, lambda: threads.append(threading.get_ident()))
    async with session_factory(engine)() as session, session.begin():
        await session.exec(sa.text("SELECT thread()"))  # type: ignore[call-overload]
        await session.exec(sa.text("UPDATE stock SET units = thread() IS NULL"))  # type: ignore[call-overload]
    assert threads == [threading.get_ident()] * 2


async def test_writers_of_one_engine_take_turns_in_order_without_polling_the_lock(
    engine: AsyncEngine,
) -> None:
    """They queue in the process, in the order they asked, and each has the lock the moment
    the one before ends its transaction: none waits for it in a lock waiter's thread."""
    writers = session_factory(engine)
    in_threads: list[int] = []
    asked = {k: asyncio.Event() for k in (1, 2, 3)}

    async def writer(k: int) -> None:
        asked[k].set()  # it runs on until it waits for its turn
        async with writers() as session, session.begin():
            await session.exec(sa.text(f"UPDATE stock SET units = units * 10 + {k}"))  # type: ignore[call-overload]

    with watching_lock_waits(lambda: in_threads.append(threading.get_ident())):
        async with writers() as first, first.begin():
            await first.exec(sa.text("UPDATE stock SET units = 4"))  # type: ignore[call-overload]
            queued = []
            for k in (1, 2, 3):
                queued.append(asyncio.create_task(writer(k)))
                await asyncio.wait_for(asked[k].wait(), timeout=5)  # before the next asks
            assert not any(task.done() for task in queued)
        await asyncio.wait_for(asyncio.gather(*queued), timeout=10)

    assert in_threads == []
    async with session_factory(engine, read_only=True)() as reader:
        # in the order they asked: ((4 * 10 + 1) * 10 + 2) * 10 + 3
        assert await reader.scalar(sa.text("SELECT units FROM stock")) == 4123


async def test_a_writer_cancelled_while_queued_leaves_the_queue_moving(tmp_path: Path) -> None:
    holder, cancelled, last = await connections(
        tmp_path / "queued.sqlite", 3, busy_timeout_ms=30_000
    )
    await holder.execute("BEGIN IMMEDIATE")

    async def begin(connection: sqlite.Connection, asked: asyncio.Event) -> None:
        asked.set()  # it runs on until it waits for its turn
        await connection.execute("BEGIN IMMEDIATE")

    asked = [asyncio.Event(), asyncio.Event()]
    queued = asyncio.create_task(begin(cancelled, asked[0]))
    await asyncio.wait_for(asked[0].wait(), timeout=5)
    last_queued = asyncio.create_task(begin(last, asked[1]))
    await asyncio.wait_for(asked[1].wait(), timeout=5)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    await holder.commit()
    # the turn passes over the cancelled writer to the next one, at once
    await asyncio.wait_for(last_queued, timeout=1)
    assert last.in_transaction and not cancelled.in_transaction
    await last.rollback()
    await asyncio.wait_for(cancelled.execute("BEGIN IMMEDIATE"), timeout=1)  # no turn left held
    await cancelled.rollback()
    for connection in (holder, cancelled, last):
        await connection.close()


async def test_a_writer_waits_for_another_engines_lock_off_the_event_loop(
    engine: AsyncEngine,
) -> None:
    """The lock's holder is another engine on the same file (as a replica's would be), here
    a task of this event loop: a writer waiting for the lock in the loop's thread would stop
    the holder from ever committing."""
    other = create_engine(str(engine.url))
    writers = session_factory(engine)
    second_waiting, second_off_the_loop = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    waited_in: list[int] = []

    async def second_writer() -> None:
        second_waiting.set()
        async with writers() as writer, writer.begin():
            await writer.exec(sa.text("UPDATE stock SET units = units * 10"))  # type: ignore[call-overload]

    def seen() -> None:
        waited_in.append(threading.get_ident())
        loop.call_soon_threadsafe(second_off_the_loop.set)

    try:
        with watching_lock_waits(seen):
            async with session_factory(other)() as first, first.begin():
                await first.exec(sa.text("UPDATE stock SET units = 4"))  # type: ignore[call-overload]
                second = asyncio.create_task(second_writer())
                await second_waiting.wait()
                # the loop runs on while the second writer waits for the lock
                await asyncio.wait_for(second_off_the_loop.wait(), timeout=5)
                assert not second.done()
            await asyncio.wait_for(second, timeout=10)
    finally:
        await other.dispose()

    assert waited_in and waited_in[0] != threading.get_ident()
    async with session_factory(engine, read_only=True)() as reader:
        assert await reader.scalar(sa.text("SELECT units FROM stock")) == 40


async def test_a_writer_gives_up_its_turn_after_the_busy_timeout(tmp_path: Path) -> None:
    holder, waiter, last = await connections(tmp_path / "queued.sqlite", 3, busy_timeout_ms=300)
    await holder.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        await waiter.execute("BEGIN IMMEDIATE")
    assert 0.25 < time.monotonic() - started < 5
    # the holder's connection closes without a commit: its turn ends with it, and the waiter
    # that gave up holds none, so the next writer has the lock at once
    await holder.close()
    await asyncio.wait_for(last.execute("BEGIN IMMEDIATE"), timeout=1)
    await last.rollback()
    for connection in (waiter, last):
        await connection.close()


async def test_a_writer_gives_up_after_the_busy_timeout(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=WAL")
    holder.execute("CREATE TABLE t (x INT)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        connection = await sqlite.creator(str(path), busy_timeout_ms=300)()
        started = time.monotonic()
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            await connection.execute("BEGIN IMMEDIATE")
        assert 0.25 < time.monotonic() - started < 5
        await connection.close()
    finally:
        holder.rollback()
        holder.close()


async def test_a_writer_cancelled_while_waiting_for_the_lock_leaves_no_lock_behind(
    engine: AsyncEngine,
) -> None:
    """Its statement goes on in its thread after the cancellation and takes the lock once
    the holder commits: the cancellation waits for it, so that the connection is rolled
    back after it, not before (which would leave the lock taken for good)."""
    other = create_engine(str(engine.url))  # the holder: another engine on the same file
    writers = session_factory(engine)
    loop = asyncio.get_running_loop()
    waiting = asyncio.Event()

    async def second_writer() -> None:
        async with writers() as writer, writer.begin():
            await writer.exec(sa.text("UPDATE stock SET units = 99"))  # type: ignore[call-overload]

    try:
        with watching_lock_waits(lambda: loop.call_soon_threadsafe(waiting.set)):
            async with session_factory(other)() as first, first.begin():
                await first.exec(sa.text("UPDATE stock SET units = 4"))  # type: ignore[call-overload]
                second = asyncio.create_task(second_writer())
                await asyncio.wait_for(waiting.wait(), timeout=5)
                second.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(second, timeout=10)
    finally:
        await other.dispose()

    # the lock is free: a third writer gets it at once, and the cancelled write is not there
    async with writers() as third, third.begin():
        await asyncio.wait_for(
            third.exec(sa.text("UPDATE stock SET units = units + 1")),  # type: ignore[call-overload]
            timeout=5,
        )
    async with session_factory(engine, read_only=True)() as reader:
        assert await reader.scalar(sa.text("SELECT units FROM stock")) == 5
