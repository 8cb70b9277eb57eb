"""Event consumers: FastStream stream subscribers in a consumer group, idempotent by event id,
acknowledged only after the handler's transaction commits.

Designed around FastStream's Redis stream behaviour (checked against the pinned version):
- a group that FastStream creates starts at `$` and misses earlier entries, so `declare()`
  creates every group at 0 before the broker starts;
- nack/reject do not XACK, so a failed entry stays pending; a second, claiming subscriber
  (XAUTOCLAIM after `claim_idle_ms`) retries it, and entries of a crashed replica too;
- the claiming subscriber only claims, so each stream has both subscribers;
- after `max_attempts` failures an entry moves to `<stream>.dead-letter` with its error.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from google.protobuf.message import DecodeError, Message
from loguru import logger
from prometheus_client import Counter, Histogram
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import Field
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import dead_letter_stream

from tienda_platform.database import PlatformTable
from tienda_platform.events import EventEnvelope, UnknownEvent, payload_of

EVENTS_CONSUMED = Counter(
    "tienda_events_consumed_total",
    "Events handled by consumers, by result.",
    ["stream", "group", "event_type", "result"],
)
EVENT_SECONDS = Histogram(
    "tienda_event_handling_seconds",
    "Time to handle one event, transaction included.",
    ["stream", "group"],
)

Handler = Callable[[AsyncSession, EventEnvelope, Message], Awaitable[None]]


class ProcessedEvent(PlatformTable, table=True):
    """Events a consumer group has handled: the idempotency record."""

    __tablename__ = "processed_events"

    consumer_group: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=36)
    processed_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


def replica_name(service: str) -> str:
    """A consumer name unique to this process."""
    return f"{service}-{socket.gethostname()}-{os.getpid()}"


@dataclass
class EventConsumer:
    """One consumer group of one service, reading one or more streams."""

    broker: RedisBroker
    engine: AsyncEngine
    group: str
    consumer: str
    max_attempts: int = 5
    claim_idle_ms: int = 10_000
    polling_ms: int = 100
    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    after_commit: Callable[[], None] | None = None
    # Called on the handler's session before it commits: whether after_commit should run
    # (e.g. outbox.take_recorded: only when the handler recorded events). None: always.
    wake_when: Callable[[AsyncSession], bool] | None = None

    def __post_init__(self) -> None:
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    def on(self, stream: str, event_type: str, handler: Handler) -> None:
        """Handle event_type from stream with handler(session, envelope, payload)."""
        if stream not in self.handlers:
            self.handlers[stream] = {}
            self._subscribe(stream)
        self.handlers[stream][event_type] = handler

    def _subscribe(self, stream: str) -> None:
        async def handle(body: bytes, message: RedisStreamMessage) -> None:
            await self.handle(stream, body, message.raw_message["message_ids"][0])

        reader = StreamSub(
            stream, group=self.group, consumer=self.consumer, polling_interval=self.polling_ms
        )
        claimer = StreamSub(
            stream,
            group=self.group,
            consumer=self.consumer,
            polling_interval=max(self.polling_ms, self.claim_idle_ms // 4),
            min_idle_time=self.claim_idle_ms,
        )
        for sub in (reader, claimer):
            self.broker.subscriber(stream=sub, ack_policy=AckPolicy.NACK_ON_ERROR)(handle)

    async def declare(self) -> None:
        """Create the group on every stream at 0, so no entry published before is missed."""
        client = await self.broker.connect()
        for stream in self.handlers:
            try:
                await client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def handle(self, stream: str, body: bytes, entry_id: bytes) -> None:
        """Run the handler once per event id; raise to leave the entry pending for a retry."""
        started = time.perf_counter()
        try:
            envelope = EventEnvelope.FromString(body)
            handler = self.handlers[stream].get(envelope.type)
            if handler is None:
                EVENTS_CONSUMED.labels(stream, self.group, envelope.type, "ignored").inc()
                return
            payload = payload_of(envelope)
        except (DecodeError, UnknownEvent) as error:
            await self.dead_letter(stream, entry_id, body, f"undecodable: {error}")
            return
        try:
            result = await self._run_once(envelope, payload, handler)
        except Exception as error:
            await self._failed(stream, entry_id, body, envelope, error)
            raise
        EVENTS_CONSUMED.labels(stream, self.group, envelope.type, result).inc()
        EVENT_SECONDS.labels(stream, self.group).observe(time.perf_counter() - started)

    async def _run_once(self, envelope: EventEnvelope, payload: Message, handler: Handler) -> str:
        """Run the handler and record the event as processed in one transaction.

        Optimistic: a redelivery is rare, so the handler runs without looking first; the
        processed-events row of an event handled before makes the commit fail, everything
        rolls back, and the delivery counts as a duplicate. So does a handler that fails
        because the first delivery already moved things on. Handlers only write to the
        database, so running one that is rolled back has no effect.
        """
        try:
            async with self._sessions() as session, session.begin():
                await handler(session, envelope, payload)
                session.add(
                    ProcessedEvent(
                        consumer_group=self.group,
                        event_id=envelope.id,
                        processed_time=datetime.now(UTC),
                    )
                )
                wake = self.wake_when is None or self.wake_when(session)
        except Exception:
            # Another delivery (or replica) committed this event first: its effect stands,
            # ours rolled back. Otherwise the handler failed, and is retried like any failure.
            if await self._processed(envelope.id):
                return "duplicate"
            raise
        if wake and self.after_commit is not None:
            self.after_commit()
        return "handled"

    async def _processed(self, event_id: str) -> bool:
        async with self._sessions() as session:
            return await session.get(ProcessedEvent, (self.group, event_id)) is not None

    async def _failed(
        self, stream: str, entry_id: bytes, body: bytes, envelope: EventEnvelope, error: Exception
    ) -> None:
        client = await self.broker.connect()
        key = f"tienda:attempts:{stream}:{self.group}"
        attempts = await client.hincrby(key, entry_id, 1)
        EVENTS_CONSUMED.labels(stream, self.group, envelope.type, "failed").inc()
        logger.opt(exception=error).warning(
            "{group} failed on {event_type} (attempt {attempts}/{max})",
            group=self.group,
            event_type=envelope.type,
            attempts=attempts,
            max=self.max_attempts,
            event_id=envelope.id,
        )
        if attempts >= self.max_attempts:
            await self.dead_letter(stream, entry_id, body, f"{type(error).__name__}: {error}")
            await client.hdel(key, entry_id)

    async def dead_letter(self, stream: str, entry_id: bytes, body: bytes, error: str) -> None:
        """Park the entry in the dead-letter stream and acknowledge it."""
        client = await self.broker.connect()
        await client.xadd(
            dead_letter_stream(stream),
            {
                "envelope": body,
                "error": error[:2000],
                "group": self.group,
                "stream": stream,
                "entry_id": entry_id,
                "time": datetime.now(UTC).isoformat(),
            },
        )
        await client.xack(stream, self.group, entry_id)
        EVENTS_CONSUMED.labels(stream, self.group, "-", "dead_lettered").inc()
        logger.error(
            "dead-lettered an entry of {stream} for {group}: {error}",
            stream=stream,
            group=self.group,
            error=error[:300],
        )
