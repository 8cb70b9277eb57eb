"""Event throughput: outbox insert -> relay -> Redis Streams -> consumer commit, against raw
redis-py XADD + XREADGROUP/XACK on the same Redis in the same run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import redis.asyncio as redis
import sqlalchemy as sa
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS
from tienda_platform.aio import cancel_and_wait
from tienda_platform.consumers import EventConsumer
from tienda_platform.database import PLATFORM_METADATA, create_engine, session_factory
from tienda_platform.events import EventEnvelope
from tienda_platform.outbox import OutboxRelay, record_event

EVENTS = 2000
BATCH = 100


async def raw_redis_rate(url: str, count: int = EVENTS) -> float:
    """Entries per second through XADD (pipelined by BATCH) and XREADGROUP + XACK."""
    client = redis.Redis.from_url(url)
    stream = "bench.raw"
    await client.delete(stream)
    await client.xgroup_create(stream, "bench", id="0", mkstream=True)
    payload: Any = {b"__data__": b"x" * 200}

    async def produce() -> None:
        for start in range(0, count, BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(min(BATCH, count - start)):
                    pipe.xadd(stream, payload)
                await pipe.execute()

    async def consume() -> None:
        done = 0
        while done < count:
            reply: Any = await client.xreadgroup(
                "bench", "c1", {stream: ">"}, count=BATCH, block=100
            )
            for _, entries in reply:
                await client.xack(stream, "bench", *[entry_id for entry_id, _ in entries])
                done += len(entries)

    started = time.perf_counter()
    await asyncio.gather(produce(), consume())
    elapsed = time.perf_counter() - started
    await client.delete(stream)
    await client.aclose()
    return count / elapsed


async def pipeline_rate(
    url: str, data_dir: Path, count: int = EVENTS, database_url: str = ""
) -> float:
    """Events per second from outbox insert to the consumer's committed transaction, on a
    SQLite file in data_dir or on the database at database_url."""
    engine = create_engine(database_url or f"sqlite+aiosqlite:///{data_dir / 'bench-events.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.drop_all)
        await conn.run_sync(PLATFORM_METADATA.create_all)
    client = redis.Redis.from_url(url)
    await client.delete(AUTH_EVENTS)
    handled = 0
    all_handled = asyncio.Event()

    async def handler(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        nonlocal handled
        handled += 1
        if handled >= count:
            all_handled.set()

    broker = RedisBroker(url, logger=None)  # type: ignore[arg-type]
    consumer = EventConsumer(
        broker=broker, engine=engine, group="bench", consumer="c1", polling_ms=10
    )
    consumer.on(AUTH_EVENTS, "user.registered", handler)
    await consumer.declare()
    await broker.start()
    relay = OutboxRelay(engine=engine, broker=broker, batch_size=BATCH, idle_seconds=0.01)
    relay_task = asyncio.create_task(relay.run())
    sessions = session_factory(engine)
    try:
        started = time.perf_counter()
        for start in range(0, count, BATCH):
            async with sessions() as session, session.begin():
                for i in range(start, min(start + BATCH, count)):
                    record_event(
                        session,
                        source="bench",
                        event_type="user.registered",
                        subject=f"users/{i}",
                        payload=events_pb2.UserRegistered(user_id=str(i), email="b@x.io"),
                    )
            relay.notify()
        await asyncio.wait_for(all_handled.wait(), timeout=max(60, count / 20))
        elapsed = time.perf_counter() - started
    finally:
        await cancel_and_wait([relay_task])
        await broker.stop()
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox_events"))
        await engine.dispose()
        await client.delete(AUTH_EVENTS)
        await client.aclose()
    return count / elapsed
