"""What auth_service has put in its outbox and on tienda.auth.events, and waiting for it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import redis.asyncio as redis
from faststream.redis.parser import BinaryMessageFormatV1
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from tienda_contracts.topology import AUTH_EVENTS
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope, payload_of
from tienda_platform.outbox import OutboxEvent


@dataclass(frozen=True)
class Published:
    """One event: its envelope, its typed payload, and the bytes it was stored or sent as."""

    envelope: EventEnvelope
    payload: Message
    raw: bytes

    @property
    def summary(self) -> tuple[str, str, str]:
        return self.envelope.type, self.envelope.subject, self.envelope.source


def _published(envelope_bytes: bytes, raw: bytes) -> Published:
    envelope = EventEnvelope.FromString(envelope_bytes)
    return Published(envelope, payload_of(envelope), raw)


async def outbox_rows(engine: AsyncEngine) -> list[tuple[Published, bool]]:
    """Every outbox row in publication order, with whether the relay has sent it."""
    statement = select(OutboxEvent).order_by(col(OutboxEvent.create_time), col(OutboxEvent.id))
    async with session_factory(engine)() as session:
        rows = (await session.exec(statement)).all()
    return [(_published(r.envelope, r.envelope), r.published_time is not None) for r in rows]


async def stream_events(redis_url: str) -> list[Published]:
    """The entries of tienda.auth.events, oldest first."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = cast(list[tuple[bytes, dict[bytes, bytes]]], await client.xrange(AUTH_EVENTS))
    finally:
        await client.aclose()
    published = []
    for _, fields in entries:
        raw = b"".join(k + v for k, v in fields.items())
        body, _headers = BinaryMessageFormatV1.parse(fields[b"__data__"])
        published.append(_published(body, raw))
    return published


def about(user_id: str, events: list[Published]) -> list[Published]:
    """The events of one user (the bootstrap admin's creation is in the outbox too)."""
    return [e for e in events if e.envelope.subject == f"users/{user_id}"]
