"""What product_service has put in its outbox and on tienda.product.events, order events for
it to consume, and waiting for either."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as redis
from faststream.redis import RedisBroker
from faststream.redis.parser import BinaryMessageFormatV1
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from tienda_contracts.topology import ORDER_EVENTS, PRODUCT_EVENTS, dead_letter_stream
from tienda_platform.consumers import ProcessedEvent
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope, build_envelope, payload_of
from tienda_platform.outbox import OutboxEvent


@dataclass(frozen=True)
class Published:
    """One event: its envelope and its typed payload."""

    envelope: EventEnvelope
    payload: Message

    @property
    def summary(self) -> tuple[str, str, str]:
        return self.envelope.type, self.envelope.subject, self.envelope.source


def _published(envelope_bytes: bytes) -> Published:
    envelope = EventEnvelope.FromString(envelope_bytes)
    return Published(envelope, payload_of(envelope))


async def outbox_rows(engine: AsyncEngine) -> list[tuple[Published, bool]]:
    """Every outbox row in publication order, with whether the relay has sent it."""
    statement = select(OutboxEvent).order_by(col(OutboxEvent.create_time), col(OutboxEvent.id))
    async with session_factory(engine)() as session:
        rows = (await session.exec(statement)).all()
    return [(_published(r.envelope), r.published_time is not None) for r in rows]


async def outbox_events(engine: AsyncEngine) -> list[Published]:
    return [event for event, _ in await outbox_rows(engine)]


async def all_sent(engine: AsyncEngine) -> bool:
    return all(sent for _, sent in await outbox_rows(engine))


async def stream_events(redis_url: str, stream: str = PRODUCT_EVENTS) -> list[Published]:
    """The entries of a stream (tienda.product.events unless told), oldest first."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(stream))
    finally:
        await client.aclose()
    return [_published(BinaryMessageFormatV1.parse(f[b"__data__"])[0]) for _, f in entries]


async def processed(engine: AsyncEngine, event_id: str) -> bool:
    """Whether the "product_service" group has committed its handling of this event."""
    async with session_factory(engine)() as session:
        return await session.get(ProcessedEvent, ("product_service", event_id)) is not None


def order_event(event_type: str, order_id: str, payload: Message) -> EventEnvelope:
    """An envelope as order_service's outbox would write it."""
    return build_envelope(
        event_type=event_type, source="order_service", subject=f"orders/{order_id}", payload=payload
    )


async def publish(redis_url: str, *envelopes: EventEnvelope) -> None:
    """Put envelopes on tienda.order.events the way an outbox relay does."""
    broker = RedisBroker(redis_url)
    await broker.connect()
    try:
        for envelope in envelopes:
            await broker.publish(
                envelope.SerializeToString(),
                stream=ORDER_EVENTS,
                headers={"event-type": envelope.type, "event-id": envelope.id},
                correlation_id=envelope.id,
            )
    finally:
        await broker.stop()


async def drained(redis_url: str, group: str = "product_service") -> bool:
    """Whether the group has read and acknowledged every entry of tienda.order.events."""
    client = redis.Redis.from_url(redis_url)
    try:
        last = await client.xrevrange(ORDER_EVENTS, count=1)
        groups = await client.xinfo_groups(ORDER_EVENTS)
    finally:
        await client.aclose()
    info = next((g for g in groups if g["name"].decode() == group), None)
    if info is None or not last:
        return False
    return bool(info["pending"] == 0 and info["last-delivered-id"] == last[0][0])


async def dead_letters(redis_url: str) -> int:
    client = redis.Redis.from_url(redis_url)
    try:
        return int(await client.xlen(dead_letter_stream(ORDER_EVENTS)))
    finally:
        await client.aclose()
