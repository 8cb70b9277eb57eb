"""FastStream's Redis stream behaviours that tienda designs around (issue #3), each shown on a
real Redis against the pinned FastStream, next to tienda's answer to it
(tienda_platform.consumers documents the workarounds)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as redis
from events.v1 import events_pb2
from faststream.middlewares import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.aio import wait_for_event
from tienda_platform.consumers import EventConsumer
from tienda_platform.events import EventEnvelope, build_envelope
from tienda_platform.testing import eventually

pytestmark = pytest.mark.integration

# claim_idle_ms / min_idle_time of these tests: well above a read's round trip, well below
# the waits
IDLE_MS = 200


async def never(condition: Callable[[], bool], within: float = 1) -> None:
    """Proves an absence: condition stays false for `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        assert not condition()
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def stream(client: redis.Redis) -> AsyncIterator[str]:
    name = f"tests.faststream.{uuid.uuid4().hex[:12]}"
    yield name
    await client.delete(name)


def envelope(user_id: str) -> EventEnvelope:
    return build_envelope(
        event_type="user.registered",
        source="auth_service",
        subject=f"users/{user_id}",
        payload=events_pb2.UserRegistered(user_id=user_id, email=f"{user_id}@x.io"),
    )


async def publish(broker: RedisBroker, stream: str, event: EventEnvelope) -> bytes:
    """Publish event on stream as the outbox relay does; its entry id."""
    entry_id: bytes = await broker.publish(event.SerializeToString(), stream=stream)
    return entry_id


def entry_id_of(msg: Any) -> bytes:
    entry_id: bytes = msg.raw_message["message_ids"][0]
    return entry_id


async def pending(client: redis.Redis, stream: str, group: str) -> list[dict[str, Any]]:
    """The group's pending entries (its PEL): message_id, consumer, times_delivered."""
    return list(await client.xpending_range(stream, group, min="-", max="+", count=100))


async def group_info(client: redis.Redis, stream: str, group: str) -> dict[str, Any]:
    groups = await client.xinfo_groups(stream)
    info: dict[str, Any] = next(g for g in groups if g["name"] == group.encode())
    return info


# a. A group FastStream creates starts at `$`: entries published before it are missed.


async def test_a_group_faststream_creates_misses_earlier_entries_one_declared_at_0_does_not(
    redis_url: str, client: redis.Redis, stream: str, platform_engine: AsyncEngine
) -> None:
    publisher = RedisBroker(redis_url)
    await publisher.connect()
    early = envelope("published-before-any-group")
    await publish(publisher, stream, early)

    broker = RedisBroker(redis_url)
    raw_seen: list[str] = []

    # raw FastStream: its subscriber creates its group itself (XGROUP CREATE ... $)
    @broker.subscriber(stream=StreamSub(stream, group="faststream-made", consumer="c1"))
    async def raw(body: bytes) -> None:
        raw_seen.append(EventEnvelope.FromString(body).id)

    # tienda: EventConsumer.declare() creates its group at 0 before the broker starts
    handled: list[str] = []

    async def record(session: AsyncSession, event: EventEnvelope, payload: Message) -> None:
        handled.append(event.id)

    consumer = EventConsumer(broker=broker, engine=platform_engine, group="declared", consumer="c1")
    consumer.on(stream, "user.registered", record)
    await consumer.declare()
    await broker.start()
    try:
        late = envelope("published-after-start")
        await publish(publisher, stream, late)

        async def both_saw_the_late_entry() -> bool:
            return late.id in raw_seen and late.id in handled

        await eventually(both_saw_the_late_entry)
        # entries reach a group in stream order: had the raw group been given the early
        # entry, it would have had it before the late one
        assert raw_seen == [late.id]
        assert handled == [early.id, late.id]
    finally:
        await broker.stop()
        await publisher.stop()


# b. nack and reject on a stream message do not XACK: the entry stays in the group's PEL.


@pytest.mark.parametrize(
    ("ack_policy", "fail"),
    [
        pytest.param(AckPolicy.MANUAL, "nack", id="msg.nack()"),
        pytest.param(AckPolicy.MANUAL, "reject", id="msg.reject()"),
        pytest.param(AckPolicy.NACK_ON_ERROR, "raise", id="NACK_ON_ERROR"),
        pytest.param(AckPolicy.REJECT_ON_ERROR, "raise", id="REJECT_ON_ERROR"),
    ],
)
async def test_nack_and_reject_leave_a_stream_entry_pending(
    redis_url: str, client: redis.Redis, stream: str, ack_policy: AckPolicy, fail: str
) -> None:
    broker = RedisBroker(redis_url)
    seen: list[bytes] = []

    @broker.subscriber(stream=StreamSub(stream, group="g", consumer="c1"), ack_policy=ack_policy)
    async def handle(body: bytes, msg: RedisStreamMessage) -> None:
        seen.append(body)
        if body == b"fails":
            if fail == "raise":
                raise RuntimeError("the handler failed")
            await getattr(msg, fail)()
        elif ack_policy is AckPolicy.MANUAL:
            await msg.ack()

    await broker.start()
    try:
        failed_id = await broker.publish(b"fails", stream=stream)
        await broker.publish(b"succeeds", stream=stream)

        # entries are handled one after the other: once the second is acknowledged, all that
        # FastStream does about the first is done
        async def second_acknowledged() -> bool:
            return seen == [b"fails", b"succeeds"] and len(await pending(client, stream, "g")) < 2

        await eventually(second_acknowledged)
        (entry,) = await pending(client, stream, "g")
        assert entry["message_id"] == failed_id
        assert (entry["consumer"], entry["times_delivered"]) == (b"c1", 1)
        # nor does anything deliver it again: a reader of new entries (>) never will
        assert seen == [b"fails", b"succeeds"]
    finally:
        await broker.stop()


async def test_a_failed_event_stays_pending_and_the_claimer_retries_it(
    redis_url: str, client: redis.Redis, stream: str, platform_engine: AsyncEngine
) -> None:
    """tienda's answer: a failed entry is left pending on purpose, and the consumer's claiming
    subscriber delivers it again. (Retried until max_attempts, then dead-lettered:
    test_platform_events.test_a_poison_event_is_dead_lettered_then_replayed_after_a_fix.)"""
    attempts: list[str] = []
    retrying, release = asyncio.Event(), asyncio.Event()

    async def fails_once(session: AsyncSession, event: EventEnvelope, payload: Message) -> None:
        attempts.append(event.id)
        if len(attempts) == 1:
            raise RuntimeError("a transient failure")
        retrying.set()
        await release.wait()

    broker = RedisBroker(redis_url)
    consumer = EventConsumer(
        broker=broker, engine=platform_engine, group="g", consumer="c1", claim_idle_ms=IDLE_MS
    )
    consumer.on(stream, "user.registered", fails_once)
    await consumer.declare()
    await broker.start()
    try:
        event = envelope("retried")
        entry_id = await publish(broker, stream, event)
        assert await wait_for_event(retrying, 10), "the failed event was not retried"
        # the second attempt runs on the entry still pending, claimed: Redis's second delivery
        (entry,) = await pending(client, stream, "g")
        assert (entry["message_id"], entry["times_delivered"]) == (entry_id, 2)
        release.set()

        async def acknowledged() -> bool:
            return not await pending(client, stream, "g")

        await eventually(acknowledged)
        assert attempts == [event.id, event.id]
    finally:
        release.set()
        await broker.stop()


# c. The claiming subscriber (min_idle_time: XAUTOCLAIM) only claims; it never reads new entries.


async def test_a_claiming_subscriber_claims_idle_pending_entries_but_never_reads_new_ones(
    redis_url: str, client: redis.Redis, stream: str
) -> None:
    broker = RedisBroker(redis_url)
    claimed: list[bytes] = []

    @broker.subscriber(
        stream=StreamSub(stream, group="g", consumer="claimer", min_idle_time=IDLE_MS)
    )
    async def claim(body: bytes, msg: RedisStreamMessage) -> None:
        claimed.append(entry_id_of(msg))

    await broker.start()
    try:
        # an entry another consumer of the group read and never acknowledged (it crashed)
        abandoned = await broker.publish(b"abandoned", stream=stream)
        read: Any = await client.xreadgroup("g", "crashed", {stream: ">"})
        ((_, [(read_id, _)]),) = read
        assert read_id == abandoned

        async def was_claimed() -> bool:
            return claimed == [abandoned]

        await eventually(was_claimed)

        new = await broker.publish(b"new", stream=stream)
        # many polls of the claimer (every 100 ms) and five times its idle time
        await never(lambda: new in claimed, within=1)
        group = await group_info(client, stream, "g")
        # the new entry was never delivered to anyone: it is neither pending nor read
        assert group["last-delivered-id"] == abandoned
        assert group["pending"] == 0
        assert claimed == [abandoned]
    finally:
        await broker.stop()


async def test_an_event_consumer_handles_new_entries_and_abandoned_ones(
    redis_url: str, client: redis.Redis, stream: str, platform_engine: AsyncEngine
) -> None:
    """tienda's answer: each stream gets a reader (new entries) and a claimer (entries left
    pending by a failure or a crashed replica). (Reclaimed entries are applied once:
    test_platform_events.test_entries_of_a_crashed_consumer_are_reclaimed_and_applied_once.)"""
    handled: list[str] = []

    async def record(session: AsyncSession, event: EventEnvelope, payload: Message) -> None:
        handled.append(event.id)

    broker = RedisBroker(redis_url)
    consumer = EventConsumer(
        broker=broker, engine=platform_engine, group="g", consumer="survivor", claim_idle_ms=IDLE_MS
    )
    consumer.on(stream, "user.registered", record)
    await consumer.declare()
    abandoned = envelope("abandoned")
    await publish(broker, stream, abandoned)
    # a replica read it and crashed: a reader of new entries will never see it again
    read: Any = await client.xreadgroup("g", "crashed", {stream: ">"})
    ((_, [_]),) = read
    await broker.start()
    try:
        new = envelope("new")
        await publish(broker, stream, new)

        async def both_done() -> bool:
            return len(handled) == 2 and not await pending(client, stream, "g")

        await eventually(both_done)
        assert sorted(handled) == sorted([abandoned.id, new.id])
    finally:
        await broker.stop()
