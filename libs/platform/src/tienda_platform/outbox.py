"""Transactional outbox: events are rows written in the state change's own transaction, and an
OutboxRelay moves them to Redis Streams through FastStream, in order, at least once.

A Redis outage only delays events: rows stay unsent and the relay retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from loguru import logger
from opentelemetry.trace import Span, SpanKind, use_span
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, async_sessionmaker
from sqlmodel import Field, col
from sqlmodel.ext.asyncio.session import AsyncSession

from tienda_platform.aio import wait_for_event
from tienda_platform.database import (
    READ_ONLY,
    PlatformTable,
    advisory_lock_key,
    is_sqlite,
    new_row,
)
from tienda_platform.events import EventEnvelope, build_envelope, stream_of, traced_context
from tienda_platform.metrics import child, metrics_enabled
from tienda_platform.retention import (
    PROCESSED_RETENTION,
    STREAM_RETENTION,
    forget_processed,
    trim_stream,
)
from tienda_platform.telemetry import tracer, tracing_configured

EVENTS_PUBLISHED = Counter(
    "tienda_events_published_total",
    "Events moved from the outbox to Redis Streams.",
    ["stream", "event_type"],
)
OUTBOX_BACKLOG = Gauge("tienda_outbox_backlog", "Outbox events not yet published.")
OUTBOX_OLDEST_AGE = Gauge(
    "tienda_outbox_oldest_unsent_age_seconds", "Age of the oldest unpublished outbox event."
)


class OutboxEvent(PlatformTable, table=True):
    """An event waiting for (or done with) publication."""

    __tablename__ = "outbox_events"

    id: str = Field(primary_key=True, max_length=36)
    event_type: str = Field(max_length=64)
    stream: str = Field(max_length=128)
    subject: str = Field(max_length=128)
    envelope: bytes = Field(sa_type=sa.LargeBinary)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    published_time: datetime | None = Field(
        default=None,
        sa_type=sa.DateTime(timezone=True),
        index=True,
    )


# session.info key: the session's transaction recorded events (the relay has work after it).
_RECORDED = "tienda.outbox.recorded"


def take_recorded(session: AsyncSession) -> bool:
    """Whether events were recorded in the session since the last call (which forgets it)."""
    return bool(session.info.pop(_RECORDED, False))


def record_event(
    session: AsyncSession, *, source: str, event_type: str, subject: str, payload: Message
) -> EventEnvelope:
    """Add an event to the caller's transaction; it is published only if that commits."""
    session.info[_RECORDED] = True
    envelope = build_envelope(
        event_type=event_type, source=source, subject=subject, payload=payload
    )
    session.add(
        new_row(
            OutboxEvent,
            id=envelope.id,
            event_type=event_type,
            stream=stream_of(event_type),
            subject=subject,
            envelope=envelope.SerializeToString(),
            create_time=envelope.time.ToDatetime(tzinfo=UTC),
        )
    )
    return envelope


# The relay's mark of a batch as sent, built once: building a statement costs more than running
# it, and every batch runs this one.
_MARK_PUBLISHED = (
    sa.update(OutboxEvent.__table__)  # type: ignore[attr-defined]
    .where(OutboxEvent.__table__.c.id.in_(sa.bindparam("ids", expanding=True)))  # type: ignore[attr-defined]
    .values(published_time=sa.bindparam("now"))
)

# PostgreSQL advisory lock of the relay at work on a database (each service has its own)
RELAY_LOCK_KEY = advisory_lock_key("tienda_platform.outbox.relay")


class OutboxRelay:
    """Publishes unsent outbox rows in insertion order and marks them sent."""

    def __init__(
        self,
        *,
        engine: AsyncEngine,
        broker: RedisBroker,
        batch_size: int = 200,
        idle_seconds: float = 0.25,
        max_backoff_seconds: float = 5.0,
        retention: timedelta = timedelta(days=1),
        count_backlog_every: float = 1.0,
        stream_retention: timedelta = STREAM_RETENTION,
        processed_retention: timedelta = PROCESSED_RETENTION,
    ) -> None:
        self._engine = engine
        self._sessions = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
        # a batch is read and marked on Core connections: the relay maps no objects, and an
        # ORM session's bookkeeping cost more than the two statements
        self._reader = engine.execution_options(**{READ_ONLY: True})
        self._sqlite = is_sqlite(str(engine.url))
        self._broker = broker
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._max_backoff = max_backoff_seconds
        self._retention = retention
        self._count_every = count_backlog_every
        self._metrics = metrics_enabled()
        self._counted_at = float("-inf")
        self._stream_retention = stream_retention
        self._processed_retention = processed_retention
        self._streams: set[str] = set()  # the streams this relay has published to
        self._wake = asyncio.Event()
        table = OutboxEvent.__table__  # type: ignore[attr-defined]
        # built once, like _MARK_PUBLISHED: every batch runs it
        self._unsent = (
            sa.select(table.c.id, table.c.event_type, table.c.stream, table.c.envelope)
            .add_columns(table.c.create_time)
            .where(table.c.published_time.is_(None))
            .order_by(table.c.create_time, table.c.id)
            .limit(batch_size)
        )
        self._unsent_locked = self._unsent.with_for_update(skip_locked=True)

    def notify(self) -> None:
        """A transaction with events committed: publish now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        """Relay forever; Redis errors back off and retry, nothing is dropped."""
        backoff = self._idle
        cleaned_at = datetime.min.replace(tzinfo=UTC)
        while True:
            # cleared before the batch is read: a transaction that commits while the batch is
            # being published wakes the next round instead of waiting for the idle poll
            self._wake.clear()
            try:
                published = await self.publish_batch()
                backoff = self._idle
                if datetime.now(UTC) - cleaned_at > timedelta(minutes=10):
                    cleaned_at = datetime.now(UTC)
                    await self._tidy_or_warn()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning("outbox relay cannot publish yet: {error}", error=repr(error)[:200])
                published = 0
                backoff = min(backoff * 2, self._max_backoff)
                await asyncio.sleep(backoff)
                continue
            if published < self._batch_size:
                await wait_for_event(self._wake, self._idle)

    async def publish_batch(self) -> int:
        """Publish one batch of unsent events in order; returns how many were sent.

        One relay of a database is at work at a time, so that events leave in the order they
        were written (the relays of other replicas find it busy and publish nothing). On
        PostgreSQL that relay holds a transaction-level advisory lock from the read to the
        mark, with the batch's rows locked too (FOR UPDATE). SQLite has one write lock for
        the whole database: the relay reads without it, publishes, and takes it only to mark
        the rows sent, so commands and consumers are not held up for a Redis round trip;
        relays of replicas sharing the file take turns by a lock on a file beside it.
        """
        if self._sqlite:
            with self._sqlite_relay_lock() as ours:
                if not ours:
                    return 0  # another relay on this database file is at work
                async with self._reader.begin() as connection:
                    rows = list((await connection.execute(self._unsent)).all())
                    await self._refresh_backlog(connection, rows)
                if not rows:
                    return 0
                await self._publish(rows)
                async with self._engine.begin() as connection:
                    await self._mark_published(connection, rows)
        else:
            async with self._engine.begin() as connection:
                if not await connection.scalar(
                    sa.select(sa.func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))
                ):
                    return 0  # another replica's relay is at work
                rows = list((await connection.execute(self._unsent_locked)).all())
                await self._refresh_backlog(connection, rows)
                if not rows:
                    return 0
                await self._publish(rows)
                await self._mark_published(connection, rows)
        for _, event_type, stream, _, _ in rows:
            child(EVENTS_PUBLISHED, stream, event_type).inc()
            self._streams.add(stream)
        return len(rows)

    async def _publish(self, rows: list[Any]) -> None:
        """XADD every row's envelope to its stream through FastStream, in one round trip.

        The round trip (the Redis instrumentation's span of the pipeline) joins the trace of
        the batch's first event, under its relay span."""
        client = await self._broker.connect()
        first: Span | None = None
        async with client.pipeline(transaction=False) as pipe:
            for event_id, event_type, stream, body, _ in rows:
                with self._publish_span(event_id, event_type, stream, body) as span:
                    await self._broker.publish(
                        body,
                        stream=stream,
                        headers={"event-type": event_type, "event-id": event_id},
                        correlation_id=event_id,
                        pipeline=pipe,
                    )
                first = first or span
            with use_span(first) if first is not None else contextlib.nullcontext():
                await pipe.execute()

    @contextlib.contextmanager
    def _sqlite_relay_lock(self) -> Iterator[bool]:
        """Whether this relay may relay now: an exclusive flock on `<database>.relay-lock`,
        held for one batch (the kernel drops it if the process dies). An in-memory
        database belongs to one process: always."""
        database = self._engine.url.database
        if not database or database == ":memory:":
            yield True
            return
        with open(f"{database}.relay-lock", "a+b") as lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True  # closing the file releases the lock

    async def _mark_published(self, connection: AsyncConnection, rows: list[Any]) -> None:
        await connection.execute(
            _MARK_PUBLISHED, {"ids": [row[0] for row in rows], "now": datetime.now(UTC)}
        )

    @contextlib.contextmanager
    def _publish_span(
        self, event_id: str, event_type: str, stream: str, body: bytes
    ) -> Iterator[Span | None]:
        """The publish continues the trace of the request that wrote the event."""
        if not tracing_configured():
            yield None
            return
        envelope = EventEnvelope.FromString(body)
        with tracer.start_as_current_span(
            f"outbox relay {event_type}",
            context=traced_context(envelope.traceparent, envelope.tracestate),
            kind=SpanKind.PRODUCER,
            attributes={"messaging.destination.name": stream, "messaging.message.id": event_id},
        ) as span:
            yield span

    async def _refresh_backlog(self, connection: AsyncConnection, rows: list[Any]) -> None:
        """A batch short of full is the whole backlog. Behind a full one, the unsent rows are
        counted at most every count_backlog_every seconds: a count reads every unsent row,
        and under load every batch is full. Nothing when metrics are off."""
        if not self._metrics:
            return
        if len(rows) < self._batch_size:
            OUTBOX_BACKLOG.set(len(rows))
        elif time.monotonic() - self._counted_at >= self._count_every:
            unsent = sa.select(sa.func.count()).where(col(OutboxEvent.published_time).is_(None))
            OUTBOX_BACKLOG.set(await connection.scalar(unsent) or 0)
            self._counted_at = time.monotonic()
        oldest = _aware(rows[0].create_time) if rows else None
        OUTBOX_OLDEST_AGE.set((datetime.now(UTC) - oldest).total_seconds() if oldest else 0)

    async def _tidy_or_warn(self) -> None:
        # tidying can wait for the next round; publishing must not wait for it
        try:
            await self.tidy()
        except Exception as error:
            logger.warning("outbox relay cannot tidy up yet: {error}", error=repr(error)[:200])

    async def tidy(self) -> None:
        """What keeps the event tables and streams from growing for ever (run every ten
        minutes): published outbox rows past their retention go, the streams this relay
        publishes to lose the entries every group has acknowledged (tienda_platform.retention),
        and the processed-event records of this database's consumers past theirs go."""
        await self.delete_published()
        client = await self._broker.connect()
        for stream in sorted(self._streams):
            trimmed = await trim_stream(client, stream, keep=self._stream_retention)
            if trimmed:
                logger.info("{stream}: {n} entries trimmed", stream=stream, n=trimmed)
        await forget_processed(self._sessions, keep=self._processed_retention)

    async def delete_published(self) -> None:
        """Forget events published longer ago than the retention period."""
        cutoff = datetime.now(UTC) - self._retention
        async with self._sessions() as session, session.begin():
            await session.exec(
                sa.delete(OutboxEvent).where(col(OutboxEvent.published_time) < cutoff)
            )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
