"""Event consumers: FastStream stream subscribers in a consumer group, idempotent by event id,
acknowledged only after the handler's transaction commits.

Entries are read in batches (up to `batch_size` per XREADGROUP) and a batch is handled in one
database transaction, with one XACK after it commits: the cost of a transaction and of a Redis
round trip is shared by the batch instead of paid per event. If anything in the batch fails
(a handler, or the processed-events row of a redelivered event), the transaction rolls back
and each event of the batch runs again on its own, so a failure or a duplicate only ever
concerns its own event.

Designed around FastStream's Redis stream behaviour (checked against the pinned version):
- a group that FastStream creates starts at `$` and misses earlier entries, so `declare()`
  creates every group at 0 before the broker starts;
- nack/reject do not XACK, so a failed entry stays pending; a second, claiming subscriber
  (XAUTOCLAIM after `claim_idle_ms`) retries it, and entries of a crashed replica too;
- the claiming subscriber only claims, so each stream has both subscribers;
- the batch parser decodes bodies as JSON, and ours are protobuf: a parser of our own
  keeps them as bytes (with each entry's headers, which carry its trace context);
- after `max_attempts` failures an entry moves to `<stream>.dead-letter` with its error;
  attempts are Redis's own count of an entry's deliveries (XPENDING), so that an entry whose
  handling ends the process (it never fails, it never finishes) is dead-lettered too.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.message import FAKE_CONSUMER, bDATA_KEY
from faststream.redis.message import RedisBatchStreamMessage as BatchMessage
from google.protobuf.message import DecodeError, Message
from loguru import logger
from opentelemetry.propagate import extract
from opentelemetry.trace import SpanKind, get_current_span
from prometheus_client import Counter, Histogram
from redis.exceptions import ResponseError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlmodel import Field
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import dead_letter_stream

from tienda_platform.database import PlatformTable, new_row
from tienda_platform.events import EventEnvelope, UnknownEvent, payload_of, traced_context
from tienda_platform.metrics import child
from tienda_platform.telemetry import tracer, tracing_configured

EVENTS_CONSUMED = Counter(
    "tienda_events_consumed_total",
    "Events handled by consumers, by result.",
    ["stream", "group", "event_type", "result"],
)
EVENT_SECONDS = Histogram(
    "tienda_event_handling_seconds",
    "Time to handle one event, its share of a batch's transaction included.",
    ["stream", "group"],
)
BATCH_EVENTS = Histogram(
    "tienda_event_batch_size_events",
    "Events handled in one database transaction.",
    ["stream", "group"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)

# The header of a dead letter replayed on its stream (tienda_platform.dead_letters): the group
# that dead-lettered it, the only one to handle it again.
REPLAYED_FOR = "tienda-replayed-for"

Handler = Callable[[AsyncSession, EventEnvelope, Message], Awaitable[None]]
# Whether an event (its payload) concerns a handler; the others are ignored. A pure function
# of the payload: one that raises dead-letters the event, as a poison event would.
Condition = Callable[[Message], bool]


class ProcessedEvent(PlatformTable, table=True):
    """Events a consumer group has handled: the idempotency record."""

    __tablename__ = "processed_events"

    consumer_group: str = Field(primary_key=True, max_length=64)
    event_id: str = Field(primary_key=True, max_length=36)
    processed_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


@dataclass(frozen=True)
class Entry:
    """One stream entry as read: its id, its body (a serialized EventEnvelope) and headers."""

    id: bytes
    body: bytes
    headers: Mapping[str, Any]


@dataclass(frozen=True)
class _Decoded:
    entry: Entry
    envelope: EventEnvelope
    payload: Message
    handler: Handler


async def _entries(message: Any) -> list[Entry]:
    """The decoded body of a batch that _parse made: its entries."""
    return [
        Entry(id=entry_id, body=body, headers=headers)
        for entry_id, body, headers in zip(
            message.raw_message["message_ids"], message.body, message.batch_headers, strict=True
        )
    ]


class Subscription(StreamSub):
    """A StreamSub that is its own copy under an empty prefix.

    FastStream's stream subscriber reads its StreamSub through a property that returns a deep
    copy with the prefix of the router it is in (if any) on the stream's name: three copies
    per XREADGROUP, and one per batch for the log context. Nothing changes the copy (the
    subscriber keeps its read position apart), so with no prefix, as tienda's subscribers
    have, the subscription itself does."""

    def add_prefix(self, prefix: str) -> Self:
        return self if not prefix else super().add_prefix(prefix)


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
    batch_size: int = 100
    handlers: dict[str, dict[str, Handler]] = field(default_factory=dict)
    # (stream, event type) -> the events of that type the handler is for (default: all)
    conditions: dict[tuple[str, str], Condition] = field(default_factory=dict)
    after_commit: Callable[[], None] | None = None
    # Called on the handler's session before it commits: whether after_commit should run
    # (e.g. outbox.take_recorded: only when the handler recorded events). None: always.
    wake_when: Callable[[AsyncSession], bool] | None = None

    def __post_init__(self) -> None:
        self._sessions = async_sessionmaker(
            self.engine, class_=AsyncSession, expire_on_commit=False
        )

    def on(
        self, stream: str, event_type: str, handler: Handler, *, when: Condition | None = None
    ) -> None:
        """Handle event_type from stream with handler(session, envelope, payload); with
        `when`, only the events whose payload it accepts. The others, like event types with
        no handler, are acknowledged as ignored, with no transaction and no processed-event
        record: there is nothing to do, so nothing to do twice."""
        if stream not in self.handlers:
            self.handlers[stream] = {}
            self._subscribe(stream)
        self.handlers[stream][event_type] = handler
        if when is None:
            self.conditions.pop((stream, event_type), None)
        else:
            self.conditions[(stream, event_type)] = when

    def _subscribe(self, stream: str) -> None:
        # The batch reaches the handler as its decoded body (_entries): a parameter taken from
        # FastStream's context (Context("message")) would be resolved in a worker thread for
        # every batch, as fast_depends runs a synchronous resolver.
        async def handle(entries: Any) -> None:
            await self.handle_batch(stream, entries)

        async def handle_claimed(entries: Any) -> None:
            await self.handle_batch(stream, entries, claimed=True)

        reader = Subscription(
            stream,
            group=self.group,
            consumer=self.consumer,
            polling_interval=self.polling_ms,
            batch=True,
            max_records=self.batch_size,
        )
        claimer = Subscription(
            stream,
            group=self.group,
            consumer=self.consumer,
            polling_interval=max(self.polling_ms, self.claim_idle_ms // 4),
            min_idle_time=self.claim_idle_ms,
            batch=True,
        )
        for sub, handler in ((reader, handle), (claimer, handle_claimed)):
            # acknowledged by handle_batch, entry by entry, once their transaction committed
            self.broker.subscriber(
                stream=sub, ack_policy=AckPolicy.MANUAL, parser=self._parse, decoder=_entries
            )(handler)

    async def _parse(self, raw: Any) -> BatchMessage:
        """A batch of entries with their bodies as bytes and each entry's headers (an entry
        written without FastStream's data field gets an empty body, which _decode refuses)."""
        message_format = self.broker.config.message_format
        bodies, headers = [], []
        for fields in raw["data"]:
            body, entry_headers = message_format.parse(fields.get(bDATA_KEY, b""))
            bodies.append(body)
            headers.append(entry_headers)
        return BatchMessage(
            raw_message=raw,
            body=bodies,
            headers=dict(headers[0]) if headers else {},
            batch_headers=headers,
            content_type="application/x-protobuf",
            consumer=FAKE_CONSUMER,
            group=self.group,
        )

    async def declare(self) -> None:
        """Create the group on every stream at 0, so no entry published before is missed."""
        client = await self.broker.connect()
        for stream in self.handlers:
            try:
                await client.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise

    async def handle_batch(
        self, stream: str, entries: list[Entry], *, claimed: bool = False
    ) -> None:
        """Handle a batch read from stream and XACK every entry that is done with: handled,
        a duplicate, ignored or dead-lettered. Failed entries stay pending for a retry.

        `claimed`: the batch was taken over from the group's pending entries (XAUTOCLAIM),
        which Redis has delivered before, as many times as it counts: an entry delivered
        more than max_attempts times has had that many attempts, and those that did not fail
        never finished (its handler ended the process), so it is dead-lettered unrun."""
        started = time.perf_counter()
        done: list[bytes] = []
        decoded: list[_Decoded] = []
        deliveries = await self._deliveries(stream, entries) if claimed else {}
        for entry in entries:
            if deliveries.get(entry.id, 1) > self.max_attempts:
                reason = (
                    f"delivered {deliveries[entry.id]} times and never acknowledged: its "
                    f"handling failed or ended the process (max_attempts={self.max_attempts})"
                )
                await self.dead_letter(stream, entry.id, entry.body, reason)
                continue
            event = await self._decode(stream, entry)
            if event is None:
                done.append(entry.id)
            else:
                decoded.append(event)
        if len(decoded) > 1 and await self._run_together(stream, decoded):
            elapsed = (time.perf_counter() - started) / len(decoded)
            for event in decoded:
                child(EVENTS_CONSUMED, stream, self.group, event.envelope.type, "handled").inc()
                child(EVENT_SECONDS, stream, self.group).observe(elapsed)
                done.append(event.entry.id)
            child(BATCH_EVENTS, stream, self.group).observe(len(decoded))
            decoded = []
        for event in decoded:
            try:
                await self._run_alone(stream, event, deliveries.get(event.entry.id, 1))
            except Exception:  # recorded by _run_alone; the entry stays pending
                continue
            done.append(event.entry.id)
        if done:
            client = await self.broker.connect()
            await client.xack(stream, self.group, *done)

    async def handle(self, stream: str, body: bytes, entry_id: bytes) -> None:
        """Handle one entry on its own (no XACK); raise to leave it pending for a retry."""
        event = await self._decode(stream, Entry(id=entry_id, body=body, headers={}))
        if event is not None:
            await self._run_alone(stream, event, delivery=1)

    async def _decode(self, stream: str, entry: Entry) -> _Decoded | None:
        """The event and its handler; None when there is nothing to run (no handler for its
        type, not one its handler is for, or a dead letter replayed for another group; or
        undecodable: then it is dead-lettered)."""
        try:
            if not entry.body:  # a serialized envelope is never empty: it has an id
                raise DecodeError("the entry carries no event")
            envelope = EventEnvelope.FromString(entry.body)
            handler = self.handlers[stream].get(envelope.type)
            replayed_for = entry.headers.get(REPLAYED_FOR)
            if replayed_for is not None and replayed_for != self.group:
                handler = None  # a dead letter of another group, replayed for that group
            if handler is not None:
                payload = payload_of(envelope)
                condition = self.conditions.get((stream, envelope.type))
                if condition is None or condition(payload):
                    return _Decoded(entry, envelope, payload, handler)
            child(EVENTS_CONSUMED, stream, self.group, envelope.type, "ignored").inc()
            return None
        except (DecodeError, UnknownEvent) as error:
            await self.dead_letter(stream, entry.id, entry.body, f"undecodable: {error}")
            return None
        except Exception as error:  # a condition is a function of the payload: a bug
            reason = f"its condition failed: {type(error).__name__}: {error}"
            await self.dead_letter(stream, entry.id, entry.body, reason)
            return None

    async def _run_together(self, stream: str, batch: list[_Decoded]) -> bool:
        """Run every handler of the batch and record every event in one transaction; False
        (and nothing of it stays) when any of it failed."""
        try:
            async with self._sessions() as session, session.begin():
                for event in batch:
                    with self._span(stream, event, quiet=True):
                        await event.handler(session, event.envelope, event.payload)
                        # the next handler reads the database, not objects of this one
                        # (a handler that changed nothing, as most do for most events,
                        # leaves nothing to flush)
                        if session.new or session.dirty or session.deleted:
                            await session.flush()
                        if session.identity_map:
                            session.expunge_all()
                now = datetime.now(UTC)
                await session.exec(
                    sa.insert(ProcessedEvent),
                    params=[
                        {
                            "consumer_group": self.group,
                            "event_id": e.envelope.id,
                            "processed_time": now,
                        }
                        for e in batch
                    ],
                )
                wake = self.wake_when is None or self.wake_when(session)
        except Exception as error:
            logger.debug(
                "{group}: a batch of {n} failed ({error}); handling its events one by one",
                group=self.group,
                n=len(batch),
                error=type(error).__name__,
            )
            return False
        if wake and self.after_commit is not None:
            self.after_commit()
        return True

    async def _deliveries(self, stream: str, entries: list[Entry]) -> dict[bytes, int]:
        """How many times Redis has delivered each of these pending entries to the group."""
        client = await self.broker.connect()
        async with client.pipeline(transaction=False) as pipe:
            for entry in entries:
                pipe.xpending_range(stream, self.group, min=entry.id, max=entry.id, count=1)
            replies = await pipe.execute()
        return {
            reply[0]["message_id"]: int(reply[0]["times_delivered"]) for reply in replies if reply
        }

    async def _run_alone(self, stream: str, event: _Decoded, delivery: int) -> None:
        started = time.perf_counter()
        with self._span(stream, event, quiet=False):
            try:
                result = await self._run_once(event.envelope, event.payload, event.handler)
            except Exception as error:
                await self._failed(stream, event, error, delivery)
                raise
        child(EVENTS_CONSUMED, stream, self.group, event.envelope.type, result).inc()
        child(EVENT_SECONDS, stream, self.group).observe(time.perf_counter() - started)
        child(BATCH_EVENTS, stream, self.group).observe(1)

    @contextmanager
    def _span(self, stream: str, event: _Decoded, *, quiet: bool) -> Iterator[None]:
        """A consumer span under the producer's (whose context the entry's headers carry, in
        the process's propagation format; without it, under the request that recorded the
        event, which the envelope names)."""
        if not tracing_configured():
            yield
            return
        parent = extract(event.entry.headers)
        if not get_current_span(parent).get_span_context().is_valid:
            parent = traced_context(event.envelope.traceparent, event.envelope.tracestate)
        with tracer.start_as_current_span(
            f"{stream} handle {event.envelope.type}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "redis",
                "messaging.operation": "process",
                "messaging.destination.name": stream,
                "messaging.consumer.group.name": self.group,
                "messaging.message.id": event.envelope.id,
            },
            # in a batch, a failure is retried alone at once, and that attempt records it
            record_exception=not quiet,
            set_status_on_exception=not quiet,
        ):
            yield

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
                    new_row(
                        ProcessedEvent,
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

    async def _failed(self, stream: str, event: _Decoded, error: Exception, delivery: int) -> None:
        """A failed attempt: the entry stays pending for the claiming subscriber, whose
        claim Redis counts as one more delivery; the last attempt dead-letters it."""
        envelope = event.envelope
        child(EVENTS_CONSUMED, stream, self.group, envelope.type, "failed").inc()
        logger.opt(exception=error).warning(
            "{group} failed on {event_type} (attempt {attempts}/{max})",
            group=self.group,
            event_type=envelope.type,
            attempts=delivery,
            max=self.max_attempts,
            event_id=envelope.id,
        )
        if delivery >= self.max_attempts:
            reason = f"{type(error).__name__}: {error}"
            await self.dead_letter(stream, event.entry.id, event.entry.body, reason)

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
