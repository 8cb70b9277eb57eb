"""Streams and idempotency records are trimmed, on a real Redis and a real database, of what
no consumer group needs any more, and nothing else."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS, dead_letter_stream
from tienda_platform.aio import cancel_and_wait
from tienda_platform.consumers import ProcessedEvent
from tienda_platform.database import PLATFORM_METADATA, create_engine, session_factory
from tienda_platform.outbox import OutboxRelay, record_event
from tienda_platform.retention import forget_processed, trim_stream

pytestmark = pytest.mark.integration

STREAM = "tests.retention"
HOUR = timedelta(hours=1)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    await client.delete(STREAM)
    yield client
    await client.delete(STREAM)
    await client.aclose()


async def ids(client: redis.Redis) -> list[bytes]:
    return [entry_id for entry_id, _ in await client.xrange(STREAM)]


async def read(client: redis.Redis, group: str, count: int) -> list[bytes]:
    answer = await client.xreadgroup(group, "c1", {STREAM: ">"}, count=count)
    return [entry_id for entry_id, _ in answer[0][1]] if answer else []


async def test_a_stream_loses_only_what_every_group_has_acknowledged(
    client: redis.Redis,
) -> None:
    # ten entries from long ago (ids are the milliseconds of their XADD)
    for n in range(1, 11):
        await client.xadd(STREAM, {"n": n}, id=f"{n}-0")
    for group in ("done", "slow", "idle"):
        await client.xgroup_create(STREAM, group, id="0")
    done = await read(client, "done", 10)
    await client.xack(STREAM, "done", *done)
    slow = await read(client, "slow", 6)
    await client.xack(STREAM, "slow", *slow[:3])  # 4, 5 and 6 stay pending

    # "idle" has read nothing yet: it needs every entry
    assert await trim_stream(client, STREAM, keep=HOUR) == 0
    await client.xgroup_destroy(STREAM, "idle")

    # "slow" still needs its pending 4-0 and everything after it
    assert await trim_stream(client, STREAM, keep=HOUR) == 3
    assert await ids(client) == [f"{n}-0".encode() for n in range(4, 11)]

    await client.xack(STREAM, "slow", *slow[3:])
    rest = await read(client, "slow", 10)
    assert rest == [f"{n}-0".encode() for n in range(7, 11)]
    await client.xack(STREAM, "slow", *rest)
    # every group is done: all but the last delivered entry go
    assert await trim_stream(client, STREAM, keep=HOUR) == 6
    assert await ids(client) == [b"10-0"]


async def test_recent_entries_stay_for_the_retention_even_when_acknowledged(
    client: redis.Redis,
) -> None:
    for n in range(5):
        await client.xadd(STREAM, {"n": n})
    await client.xgroup_create(STREAM, "done", id="0")
    await client.xack(STREAM, "done", *await read(client, "done", 10))

    assert await trim_stream(client, STREAM, keep=HOUR) == 0
    assert len(await ids(client)) == 5
    # an hour later they are old enough
    later = datetime.now(UTC) + 2 * HOUR
    assert await trim_stream(client, STREAM, keep=HOUR, now=later) == 4


async def test_entries_acknowledged_while_the_groups_are_read_do_not_stop_the_trim(
    client: redis.Redis,
) -> None:
    """XINFO GROUPS counts pending entries that the group acknowledges before XPENDING asks
    for the oldest (which then has none): the trim goes on as if none were pending."""
    for n in range(1, 6):
        await client.xadd(STREAM, {"n": n}, id=f"{n}-0")
    await client.xgroup_create(STREAM, "busy", id="0")
    taken = await read(client, "busy", 5)

    class AcknowledgingMeanwhile:
        """The real client, with the group's consumer acknowledging just before XPENDING."""

        def __getattr__(self, name: str) -> object:
            return getattr(client, name)

        async def xpending(self, stream: str, group: bytes) -> object:
            await client.xack(stream, group, *taken)
            return await client.xpending(stream, group)

    assert await trim_stream(AcknowledgingMeanwhile(), STREAM, keep=HOUR) == 4
    assert await ids(client) == [b"5-0"]


async def test_a_stream_that_is_gone_has_nothing_to_trim(client: redis.Redis) -> None:
    assert await trim_stream(client, STREAM, keep=HOUR) == 0


async def test_idempotency_records_older_than_the_retention_are_forgotten(
    database_url: str,
) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(PLATFORM_METADATA.create_all)
        now = datetime.now(UTC)
        sessions = session_factory(engine)
        async with sessions() as session, session.begin():
            for event_id, age in (("old-1", 8), ("old-2", 30), ("recent", 6)):
                for group in ("a", "b"):
                    session.add(
                        ProcessedEvent(
                            consumer_group=group,
                            event_id=event_id,
                            processed_time=now - timedelta(days=age),
                        )
                    )
        assert await forget_processed(sessions, keep=timedelta(days=7), now=now) == 4
        assert await _processed(engine) == [("a", "recent"), ("b", "recent")]
    finally:
        await engine.dispose()


async def _processed(engine: AsyncEngine) -> list[tuple[str, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.select(ProcessedEvent.consumer_group, ProcessedEvent.event_id).order_by(  # type: ignore[call-overload]
                ProcessedEvent.consumer_group
            )
        )
        return [(row[0], row[1]) for row in rows]


def record_deleted(session: AsyncSession, user_id: str) -> None:
    record_event(
        session,
        source="auth_service",
        event_type="user.deleted",
        subject=f"users/{user_id}",
        payload=events_pb2.UserDeleted(user_id=user_id),
    )


async def test_the_relay_tidies_its_streams_and_records_but_not_dead_letters(
    redis_url: str, database_url: str
) -> None:
    engine = create_engine(database_url)
    client = redis.Redis.from_url(redis_url)
    relay = OutboxRelay(
        engine=engine,
        broker=RedisBroker(redis_url),
        stream_retention=timedelta(0),
        processed_retention=timedelta(0),
    )
    dead_letters = dead_letter_stream(AUTH_EVENTS)
    try:
        await client.delete(AUTH_EVENTS, dead_letters)
        async with engine.begin() as conn:
            await conn.run_sync(PLATFORM_METADATA.create_all)
        await client.xadd(dead_letters, {"error": "kept for an operator"})
        await client.xgroup_create(AUTH_EVENTS, "readers", id="0", mkstream=True)
        async with session_factory(engine)() as session, session.begin():
            for n in range(3):
                record_deleted(session, f"u{n}")
            session.add(
                ProcessedEvent(
                    consumer_group="readers",
                    event_id="long-ago",
                    processed_time=datetime.now(UTC) - timedelta(days=30),
                )
            )
        assert await relay.publish_batch() == 3
        answer = await client.xreadgroup("readers", "c1", {AUTH_EVENTS: ">"}, count=10)
        await client.xack(AUTH_EVENTS, "readers", *[entry_id for entry_id, _ in answer[0][1]])

        await relay.tidy()
        assert await client.xlen(AUTH_EVENTS) == 1  # the last delivered entry
        assert await client.xlen(dead_letters) == 1
        assert await _processed(engine) == []
    finally:
        await relay._broker.stop()
        await client.delete(AUTH_EVENTS, dead_letters)
        await client.aclose()
        await engine.dispose()


async def test_a_relay_that_cannot_tidy_goes_on_publishing_and_tries_again_later(
    redis_url: str, tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    client = redis.Redis.from_url(redis_url)
    relay = OutboxRelay(engine=engine, broker=RedisBroker(redis_url), idle_seconds=0.01)
    attempts = 0

    async def failing_tidy() -> None:
        nonlocal attempts
        attempts += 1
        raise ConnectionError("redis went away")

    relay.tidy = failing_tidy  # type: ignore[method-assign]
    try:
        await client.delete(AUTH_EVENTS)
        async with engine.begin() as conn:
            await conn.run_sync(PLATFORM_METADATA.create_all)
        running = asyncio.create_task(relay.run())
        for n in range(3):  # three rounds of the relay, each with an event to publish
            async with session_factory(engine)() as session, session.begin():
                record_deleted(session, f"u{n}")
            relay.notify()
            await asyncio.wait_for(_stream_reaches(client, n + 1), timeout=10)
        await cancel_and_wait([running])
        assert running.cancelled()
        assert attempts == 1  # the next try is ten minutes on
    finally:
        await relay._broker.stop()
        await client.delete(AUTH_EVENTS)
        await client.aclose()
        await engine.dispose()


async def _stream_reaches(client: redis.Redis, length: int) -> None:
    while True:
        if await client.xlen(AUTH_EVENTS) >= length:
            return
        await asyncio.sleep(0.01)
