"""Outbox, relay and consumers on a real Redis and a real database."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as redis
import sqlalchemy as sa
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from faststream.redis.parser import BinaryMessageFormatV1
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS, dead_letter_stream
from tienda_platform.aio import cancel_and_wait
from tienda_platform.consumers import EventConsumer, Subscription
from tienda_platform.database import PLATFORM_METADATA, create_engine, session_factory
from tienda_platform.dead_letters import DeadLetters
from tienda_platform.events import EventEnvelope, build_envelope
from tienda_platform.outbox import OutboxEvent, OutboxRelay, record_event
from tienda_platform.redis_server import free_port
from tienda_platform.testing import events_consumed, eventually

pytestmark = pytest.mark.integration

Effects = list[tuple[str, str]]


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'events.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
        await conn.execute(sa.text("CREATE TABLE effects (event_id TEXT, user_id TEXT)"))
    yield engine
    await engine.dispose()


async def effects(engine: AsyncEngine) -> Effects:
    async with engine.connect() as conn:
        return [(r[0], r[1]) for r in await conn.execute(sa.text("SELECT * FROM effects"))]


async def remember(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
    assert isinstance(payload, events_pb2.UserRegistered)
    await session.exec(  # type: ignore[call-overload]
        sa.text("INSERT INTO effects VALUES (:e, :u)").bindparams(e=envelope.id, u=payload.user_id)
    )


def registered(user_id: str) -> events_pb2.UserRegistered:
    return events_pb2.UserRegistered(user_id=user_id, email=f"{user_id}@x.io", full_name="X")


async def write_events(engine: AsyncEngine, user_ids: list[str]) -> list[EventEnvelope]:
    async with session_factory(engine)() as session, session.begin():
        return [
            record_event(
                session,
                source="auth_service",
                event_type="user.registered",
                subject=f"users/{u}",
                payload=registered(u),
            )
            for u in user_ids
        ]


def consumer(
    broker: RedisBroker,
    engine: AsyncEngine,
    name: str,
    handler=remember,  # type: ignore[no-untyped-def]
    **options,
) -> EventConsumer:
    consumer = EventConsumer(broker=broker, engine=engine, group="tests", consumer=name, **options)
    consumer.on(AUTH_EVENTS, "user.registered", handler)
    return consumer


async def started(*consumers: EventConsumer) -> None:
    for c in consumers:
        await c.declare()
        await c.broker.start()


async def three_events_consumed(redis_url: str, engine: AsyncEngine) -> EventConsumer:
    """Three events written, relayed and handled by a consumer "r1", stopped since."""
    publisher = RedisBroker(redis_url)
    await write_events(engine, ["u1", "u2", "u3"])
    assert await OutboxRelay(engine=engine, broker=publisher).publish_batch() == 3
    reader = consumer(RedisBroker(redis_url), engine, "r1")
    await started(reader)
    try:
        await eventually(lambda: _count(engine, 3))
    finally:
        await reader.broker.stop()
        await publisher.stop()
    return reader


async def test_outbox_events_reach_a_group_created_after_they_were_published(
    redis_url: str, engine: AsyncEngine
) -> None:
    # the consumer's group is created after the relay published the three events
    await three_events_consumed(redis_url, engine)
    assert [u for _, u in await effects(engine)] == ["u1", "u2", "u3"]


async def _count(engine: AsyncEngine, n: int) -> bool:
    return len(await effects(engine)) == n


class _ObservedRelay(OutboxRelay):
    """The real relay, telling when it has begun to publish a batch."""

    def __init__(self, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**options)
        self.publishing = asyncio.Event()

    async def _publish(self, rows):  # type: ignore[no-untyped-def]
        self.publishing.set()
        await super()._publish(rows)


async def test_commands_commit_while_the_relay_waits_for_redis_on_sqlite(
    redis_url: str, engine: AsyncEngine
) -> None:
    # SQLite has one write lock: a relay that held it across its Redis round trip would stall
    # every command and consumer of the service for as long as Redis takes to answer
    await write_events(engine, ["a", "b"])
    relay = _ObservedRelay(engine=engine, broker=RedisBroker(redis_url))
    await relay._broker.connect()
    admin = redis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        publishing = asyncio.create_task(relay.publish_batch())
        await asyncio.wait_for(relay.publishing.wait(), timeout=10)
        # the XADDs wait for Redis; meanwhile another transaction writes and commits
        await asyncio.wait_for(write_events(engine, ["c"]), timeout=5)
        assert not publishing.done()
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
        await admin.aclose()
    assert await asyncio.wait_for(publishing, timeout=10) == 2
    async with session_factory(engine)() as session:
        unsent = await session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxEvent)
            .where(sa.column("published_time").is_(None))
        )
    assert unsent == 1  # c, written while a and b were being published
    await relay._broker.stop()


async def test_an_event_committed_while_the_relay_publishes_is_not_left_for_the_idle_poll(
    redis_url: str, engine: AsyncEngine
) -> None:
    client = redis.Redis.from_url(redis_url)
    await client.delete(AUTH_EVENTS)

    class Interrupted(OutboxRelay):
        """A command commits (and wakes the relay) while the first batch is on its way."""

        async def _publish(self, rows):  # type: ignore[no-untyped-def]
            if not written_during:
                written_during.extend(await write_events(engine, ["b"]))
                self.notify()
            await super()._publish(rows)

    written_during: list[EventEnvelope] = []
    await write_events(engine, ["a"])
    # an idle poll far beyond the wait below: only the wake-up can publish b in time
    relay = Interrupted(engine=engine, broker=RedisBroker(redis_url), idle_seconds=600)
    running = asyncio.create_task(relay.run())
    try:
        await eventually(lambda: _stream_length(client, 2), within=10)
        assert [_user_of(fields) for _, fields in await client.xrange(AUTH_EVENTS)] == ["a", "b"]
    finally:
        await cancel_and_wait([running])
        await relay._broker.stop()
        await client.delete(AUTH_EVENTS)
        await client.aclose()


async def test_two_relays_on_one_sqlite_file_publish_each_event_once(
    redis_url: str, engine: AsyncEngine
) -> None:
    client = redis.Redis.from_url(redis_url)
    await client.delete(AUTH_EVENTS)
    written = await write_events(engine, [f"u{i}" for i in range(120)])
    # two replicas of a service, each with its own engine and relay, on the same file
    other_engine = create_engine(str(engine.url))
    relays = [
        OutboxRelay(engine=e, broker=RedisBroker(redis_url), batch_size=10)
        for e in (engine, other_engine)
    ]

    async def relay_until_sent(relay: OutboxRelay) -> None:
        while await _unsent(engine):
            await relay.publish_batch()
            await asyncio.sleep(0)

    try:
        await asyncio.wait_for(
            asyncio.gather(*(relay_until_sent(relay) for relay in relays)), timeout=30
        )
        published = await _published_ids(client)
        assert sorted(published) == sorted(e.id for e in written)
    finally:
        await other_engine.dispose()
        for relay in relays:
            await relay._broker.stop()
        await client.delete(AUTH_EVENTS)
        await client.aclose()


async def test_a_relay_stopped_at_any_moment_stops_and_loses_no_event(
    redis_url: str, engine: AsyncEngine
) -> None:
    # redis-py sends through asyncio.wait_for, which on Python 3.11 drops a cancellation that
    # arrives as a command completes: a relay cancelled once can run on for ever (and a
    # service's shutdown with it). Stopped at many moments of its work, it must end each time.
    client = redis.Redis.from_url(redis_url)
    await client.delete(AUTH_EVENTS)
    written: list[EventEnvelope] = []
    moments = random.Random(7)
    try:
        for round_ in range(40):
            written += await write_events(engine, [f"u{round_}-{i}" for i in range(10)])
            relay = OutboxRelay(engine=engine, broker=RedisBroker(redis_url), batch_size=3)
            running = asyncio.create_task(relay.run())
            await asyncio.sleep(moments.uniform(0, 0.03))
            async with asyncio.timeout(5):
                await cancel_and_wait([running])
            await relay._broker.stop()
        # what was published before a stop stays published; the rest is published now
        relay = OutboxRelay(engine=engine, broker=RedisBroker(redis_url))
        while await relay.publish_batch():
            pass
        await relay._broker.stop()
        published = await _published_ids(client)
        assert set(published) == {e.id for e in written}
        assert await _unsent(engine) == 0
    finally:
        await client.delete(AUTH_EVENTS)
        await client.aclose()


async def _unsent(engine: AsyncEngine) -> int:
    async with session_factory(engine)() as session:
        count = await session.scalar(
            sa.select(sa.func.count())
            .select_from(OutboxEvent)
            .where(sa.column("published_time").is_(None))
        )
    return int(count or 0)


@pytest.fixture
async def engine_of_each(database_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine fixture's tables, on SQLite and on PostgreSQL."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
    yield engine
    await engine.dispose()


async def test_state_commits_while_redis_is_down_and_events_follow_in_order(
    tmp_path: Path, engine_of_each: AsyncEngine
) -> None:
    """On PostgreSQL the relay holds an advisory lock and its batch's rows while it publishes:
    a publish that fails must give both back, or the events would wait for ever."""
    engine = engine_of_each
    from tienda_platform.redis_server import EmbeddedRedis, free_port

    port = free_port()
    # batches of 2: the backlog that piles up during the outage takes several batches
    relay = OutboxRelay(
        engine=engine,
        broker=RedisBroker(f"redis://127.0.0.1:{port}/0"),
        batch_size=2,
        count_backlog_every=0,
    )
    await write_events(engine, ["a", "b"])  # the state change commits with Redis down
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        await relay.publish_batch()
    await write_events(engine, ["c", "d", "e"])
    async with session_factory(engine)() as session:
        unsent = await session.scalar(sa.select(sa.func.count()).select_from(OutboxEvent))
    assert unsent == 5

    with EmbeddedRedis(tmp_path / "redis", port=port) as server:
        assert await relay.publish_batch() == 2
        # when a batch is full the backlog is counted, not taken from the batch
        assert REGISTRY.get_sample_value("tienda_outbox_backlog") == 5
        relay_task = asyncio.create_task(relay.run())
        client = redis.Redis.from_url(server.url)
        try:
            await eventually(lambda: _stream_length(client, 5))
            entries = await client.xrange(AUTH_EVENTS)
            users = [_user_of(fields) for _, fields in entries]
            assert users == ["a", "b", "c", "d", "e"]
        finally:
            await cancel_and_wait([relay_task])
            await client.aclose()


async def _batches_and_backlog_counts(
    redis_url: str, engine: AsyncEngine, relay_options: dict[str, float], users: int
) -> tuple[list[int], list[str]]:
    """The sizes of the batches a relay publishes until none is full, and the statements
    it ran to count the backlog meanwhile."""
    counts: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "count(" in statement.lower():
            counts.append(statement)

    broker = RedisBroker(redis_url)
    relay = OutboxRelay(engine=engine, broker=broker, batch_size=2, **relay_options)
    await write_events(engine, [f"user-{i}" for i in range(users)])
    await broker.connect()
    sa.event.listen(engine.sync_engine, "before_cursor_execute", record)
    batches: list[int] = []
    try:
        while not batches or batches[-1] == 2:
            batches.append(await relay.publish_batch())
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", record)
        await broker.stop()
    assert await _unsent(engine) == 0
    return batches, counts


async def test_behind_full_batches_the_backlog_is_counted_at_most_once_a_while(
    redis_url: str, engine: AsyncEngine
) -> None:
    batches, counts = await _batches_and_backlog_counts(
        redis_url, engine, {"count_backlog_every": 3600}, users=7
    )
    assert batches == [2, 2, 2, 1]
    # three full batches, one count: the first (7 unsent); the short batch is all there was
    assert len(counts) == 1
    assert REGISTRY.get_sample_value("tienda_outbox_backlog") == 1


async def test_with_metrics_off_the_backlog_is_never_counted(
    redis_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_ENABLED", "false")
    batches, counts = await _batches_and_backlog_counts(
        redis_url, engine, {"count_backlog_every": 0}, users=3
    )
    assert batches == [2, 1]
    assert counts == []


async def test_the_oldest_unsent_event_s_age_grows_while_redis_is_down_and_clears_after(
    redis_url: str, engine: AsyncEngine
) -> None:
    """tienda_outbox_oldest_unsent_age_seconds, which the OutboxBacklogGrowing alert reads:
    the age of the oldest event waiting, and 0 once every event is out."""
    await write_events(engine, ["a", "b"])
    written = datetime.now(UTC) - timedelta(seconds=120)
    async with engine.begin() as connection:
        await connection.execute(sa.update(OutboxEvent).values(create_time=written))
    down = OutboxRelay(engine=engine, broker=RedisBroker(f"redis://127.0.0.1:{free_port()}/0"))
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        await down.publish_batch()
    age = REGISTRY.get_sample_value("tienda_outbox_oldest_unsent_age_seconds")
    assert age is not None and 120 <= age < 180
    broker = RedisBroker(redis_url)
    relay = OutboxRelay(engine=engine, broker=broker)
    try:
        assert await relay.publish_batch() == 2
        assert await relay.publish_batch() == 0
    finally:
        await broker.stop()
    assert REGISTRY.get_sample_value("tienda_outbox_oldest_unsent_age_seconds") == 0


async def _stream_length(client: redis.Redis, n: int) -> bool:
    return bool(await client.exists(AUTH_EVENTS)) and await client.xlen(AUTH_EVENTS) == n


async def _published_ids(client: redis.Redis) -> list[str]:
    """The ids of the events on the stream, in stream order."""
    return [
        EventEnvelope.FromString(_envelope_bytes(fields)).id
        for _, fields in await client.xrange(AUTH_EVENTS)
    ]


def _user_of(fields: dict[bytes, bytes]) -> str:
    payload = _payload(_envelope_bytes(fields))
    assert isinstance(payload, events_pb2.UserRegistered)
    return payload.user_id


async def test_duplicate_delivery_has_no_second_effect(redis_url: str, engine: AsyncEngine) -> None:
    broker = RedisBroker(redis_url)
    reader = consumer(broker, engine, "r1")
    await started(reader)
    try:
        envelope = build_envelope(
            event_type="user.registered",
            source="auth_service",
            subject="users/d",
            payload=registered("d"),
        )
        for _ in range(3):
            await broker.publish(envelope.SerializeToString(), stream=AUTH_EVENTS)
        client = redis.Redis.from_url(redis_url)
        await eventually(lambda: _pending_and_delivered(client, 3))
        await client.aclose()
        assert await effects(engine) == [(envelope.id, "d")]
    finally:
        await broker.stop()


async def _pending_and_delivered(client: redis.Redis, entries: int) -> bool:
    """The group has read all `entries` entries of the stream and acknowledged them."""
    stream = await client.xinfo_stream(AUTH_EVENTS)
    groups = await client.xinfo_groups(AUTH_EVENTS)
    group = next(g for g in groups if g["name"] == b"tests")
    return (
        stream["length"] == entries
        and group["pending"] == 0
        and group["last-delivered-id"] == stream["last-generated-id"]
    )


async def test_entries_of_a_crashed_consumer_are_reclaimed_and_applied_once(
    redis_url: str, engine: AsyncEngine
) -> None:
    publisher = RedisBroker(redis_url)
    await write_events(engine, ["crash-before-commit", "crash-after-commit"])
    await OutboxRelay(engine=engine, broker=publisher).publish_batch()
    client = redis.Redis.from_url(redis_url)
    await client.xgroup_create(AUTH_EVENTS, "tests", id="0")
    # a replica reads both entries, commits the effect of the second one, and dies before XACK
    ((_, entries),) = await client.xreadgroup("tests", "dead-replica", {AUTH_EVENTS: ">"})
    body = _envelope_bytes(entries[1][1])
    dead = consumer(RedisBroker(redis_url), engine, "dead-replica")
    await dead._run_once(EventEnvelope.FromString(body), _payload(body), remember)
    assert len(await effects(engine)) == 1

    survivor = consumer(RedisBroker(redis_url), engine, "survivor", claim_idle_ms=300)
    await started(survivor)
    try:
        await eventually(lambda: _pending_and_delivered(client, 2))
        assert sorted(u for _, u in await effects(engine)) == [
            "crash-after-commit",
            "crash-before-commit",
        ]
    finally:
        await survivor.broker.stop()
        await publisher.stop()
        await client.aclose()


async def test_an_event_whose_handling_ends_the_process_is_dead_lettered_unrun(
    redis_url: str, engine: AsyncEngine
) -> None:
    """A handler that kills its process never fails, so no failure is ever counted: Redis's
    count of the entry's deliveries is, and past max_attempts the entry is dead-lettered."""
    from tienda_platform.dead_letters import DeadLetters

    publisher = RedisBroker(redis_url)
    await write_events(engine, ["kills-its-handler"])
    await OutboxRelay(engine=engine, broker=publisher).publish_batch()
    client = redis.Redis.from_url(redis_url)
    await client.xgroup_create(AUTH_EVENTS, "tests", id="0")
    # three replicas in turn took the entry over and died handling it
    ((_, [(entry_id, _)]),) = await client.xreadgroup("tests", "replica-1", {AUTH_EVENTS: ">"})
    for replica in ("replica-2", "replica-3"):
        await client.xclaim(AUTH_EVENTS, "tests", replica, 0, [entry_id])
    ran: list[str] = []

    async def deadly(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        ran.append(envelope.id)  # what would end the process again

    survivor = consumer(
        RedisBroker(redis_url),
        engine,
        "survivor",
        handler=deadly,
        max_attempts=3,
        claim_idle_ms=100,
    )
    await started(survivor)
    try:
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        (letter,) = await DeadLetters(client, publisher).list(AUTH_EVENTS)
        assert "delivered 4 times and never acknowledged" in letter.error
        assert ran == []
        await eventually(lambda: _pending_and_delivered(client, 1))
    finally:
        await survivor.broker.stop()
        await publisher.stop()
        await client.aclose()


def _envelope_bytes(fields: dict[bytes, bytes]) -> bytes:
    body, _ = BinaryMessageFormatV1.parse(fields[b"__data__"])
    return body


def _payload(body: bytes) -> Message:
    payload = events_pb2.UserRegistered()
    EventEnvelope.FromString(body).data.Unpack(payload)
    return payload


async def test_a_poison_event_is_dead_lettered_then_replayed_after_a_fix(
    redis_url: str, engine: AsyncEngine
) -> None:
    from tienda_platform.dead_letters import DeadLetters

    broken = True

    async def fragile(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        if broken:
            raise RuntimeError("bug in the handler")
        await remember(session, envelope, payload)

    broker = RedisBroker(redis_url)
    reader = consumer(broker, engine, "r1", handler=fragile, max_attempts=3, claim_idle_ms=100)
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await write_events(engine, ["poison"])
        await OutboxRelay(engine=engine, broker=broker).publish_batch()
        # a failed entry stays pending (nack does not XACK) until it dead-letters
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        assert await effects(engine) == []
        letters = DeadLetters(client, broker)
        (letter,) = await letters.list(AUTH_EVENTS)
        assert "bug in the handler" in letter.error and letter.group == "tests"
        await eventually(lambda: _pending_and_delivered(client, 1))

        broken = False
        assert await letters.replay(AUTH_EVENTS) == 1
        await eventually(lambda: _count(engine, 1))
        assert await letters.list(AUTH_EVENTS) == []
    finally:
        await broker.stop()
        await client.aclose()


async def test_a_replayed_dead_letter_is_handled_again_by_its_group_only(
    redis_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """The other groups of the stream handled the event long ago; their processed-events
    record of it may be gone (retention keeps a week), and they still do not do it twice."""
    from tienda_platform.dead_letters import DeadLetters

    broken = True

    async def fragile(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        if broken:
            raise RuntimeError("bug in the handler")
        await remember(session, envelope, payload)

    other_engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    async with other_engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
        await conn.execute(sa.text("CREATE TABLE effects (event_id TEXT, user_id TEXT)"))
    failing = consumer(
        RedisBroker(redis_url), engine, "r1", handler=fragile, max_attempts=2, claim_idle_ms=100
    )
    other = EventConsumer(
        broker=RedisBroker(redis_url), engine=other_engine, group="others", consumer="o1"
    )
    other.on(AUTH_EVENTS, "user.registered", remember)
    await started(failing, other)
    publisher = RedisBroker(redis_url)
    client = redis.Redis.from_url(redis_url)
    ignored = events_consumed(AUTH_EVENTS, "others", "user.registered", "ignored")
    try:
        await write_events(engine, ["replayed"])
        await OutboxRelay(engine=engine, broker=publisher).publish_batch()
        await eventually(lambda: _count(other_engine, 1))
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        async with other_engine.begin() as conn:  # as retention would, after a week
            await conn.execute(sa.text("DELETE FROM processed_events"))

        broken = False
        assert await DeadLetters(client, publisher).replay(AUTH_EVENTS) == 1
        await eventually(lambda: _count(engine, 1))
        await eventually(
            lambda: (
                events_consumed(AUTH_EVENTS, "others", "user.registered", "ignored") == ignored + 1
            )
        )
        assert len(await effects(other_engine)) == 1
    finally:
        for c in (failing, other):
            await c.broker.stop()
        await publisher.stop()
        await client.aclose()
        await other_engine.dispose()


async def test_consumers_start_once_redis_answers_and_miss_nothing(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A service started while Redis is down serves (start_consumers does not wait for ever)
    and its consumers start when Redis does, from the start of their streams."""
    from tienda_platform.messaging import start_consumers
    from tienda_platform.redis_server import EmbeddedRedis, free_port

    server = EmbeddedRedis(tmp_path / "redis", port=free_port())
    broker = RedisBroker(server.url)
    reader = consumer(broker, engine, "r1")
    starting = await start_consumers(broker, [reader], wait=0.3)
    publisher = RedisBroker(server.url)
    try:
        assert not starting.done()  # Redis is not there: the service goes on without it
        await write_events(engine, ["early"])  # state changes commit meanwhile
        server.start()
        relay = OutboxRelay(engine=engine, broker=publisher)
        await eventually(relay.publish_batch, within=10)  # an event published at once
        await eventually(lambda: _count(engine, 1), within=20)
        # the consumers may handle the event before broker.start() has returned
        await asyncio.wait_for(starting, timeout=10)  # and it ends without an error
    finally:
        starting.cancel()
        await broker.stop()
        await publisher.stop()
        server.stop()


async def _exists(client: redis.Redis, key: str) -> bool:
    return bool(await client.exists(key)) and await client.xlen(key) > 0


async def test_replicas_of_one_group_split_the_work_and_groups_each_get_everything(
    redis_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    handled_by: dict[str, list[str]] = {"r1": [], "r2": []}

    def tracking(name: str):  # type: ignore[no-untyped-def]
        async def handler(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
            handled_by[name].append(envelope.id)
            await remember(session, envelope, payload)

        return handler

    r1 = consumer(RedisBroker(redis_url), engine, "r1", handler=tracking("r1"), polling_ms=10)
    r2 = consumer(RedisBroker(redis_url), engine, "r2", handler=tracking("r2"), polling_ms=10)
    other_engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'other.db'}")
    async with other_engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
        await conn.execute(sa.text("CREATE TABLE effects (event_id TEXT, user_id TEXT)"))
    other = EventConsumer(
        broker=RedisBroker(redis_url), engine=other_engine, group="others", consumer="o1"
    )
    other.on(AUTH_EVENTS, "user.registered", remember)
    await started(r1, r2, other)
    publisher = RedisBroker(redis_url)
    try:
        await write_events(engine, [f"user-{i}" for i in range(60)])
        await OutboxRelay(engine=engine, broker=publisher).publish_batch()
        await eventually(lambda: _count(engine, 60))
        await eventually(lambda: _count(other_engine, 60))
        assert not set(handled_by["r1"]) & set(handled_by["r2"])
        assert handled_by["r1"] and handled_by["r2"]
    finally:
        for c in (r1, r2, other):
            await c.broker.stop()
        await publisher.stop()
        await other_engine.dispose()


async def test_a_handler_constraint_violation_is_a_failure_not_a_duplicate(
    redis_url: str, engine: AsyncEngine
) -> None:
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE taken (k TEXT PRIMARY KEY)"))
        await conn.execute(sa.text("INSERT INTO taken VALUES ('k')"))

    async def clashing(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        await session.exec(sa.text("INSERT INTO taken VALUES ('k')"))  # type: ignore[call-overload]

    broker = RedisBroker(redis_url)
    reader = consumer(broker, engine, "r1", handler=clashing, max_attempts=2, claim_idle_ms=100)
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await write_events(engine, ["clash"])
        await OutboxRelay(engine=engine, broker=broker).publish_batch()
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        (letter,) = await DeadLetters(client, broker).list(AUTH_EVENTS)
        assert "IntegrityError" in letter.error
        async with engine.connect() as conn:
            processed = await conn.execute(sa.text("SELECT count(*) FROM processed_events"))
            assert processed.scalar_one() == 0
    finally:
        await broker.stop()
        await client.aclose()


async def test_a_redelivery_is_a_duplicate_even_when_its_handler_now_fails(
    engine: AsyncEngine,
) -> None:
    async def once_only(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        # a handler that refuses to apply an event twice (state has moved on)
        done = await session.exec(  # type: ignore[call-overload]
            sa.text("SELECT count(*) FROM effects WHERE event_id = :e").bindparams(e=envelope.id)
        )
        if done.scalar_one():
            raise RuntimeError("already applied")
        await remember(session, envelope, payload)

    # no Redis needed: handle() only goes to Redis for failures and dead letters
    reader = consumer(RedisBroker("redis://127.0.0.1:1/0"), engine, "r1", handler=once_only)
    (envelope,) = await write_events(engine, ["u1"])
    body = envelope.SerializeToString()

    before = _consumed("duplicate")
    await reader.handle(AUTH_EVENTS, body, b"1-0")
    await reader.handle(AUTH_EVENTS, body, b"1-0")  # redelivered: no error, no second effect

    assert await effects(engine) == [(envelope.id, "u1")]
    assert _consumed("duplicate") == before + 1


def _consumed(result: str) -> float:
    return events_consumed(AUTH_EVENTS, "tests", "user.registered", result)


def _batches() -> tuple[float, float]:
    """(transactions, events) of the batch-size histogram for the tests group."""
    labels = {"stream": AUTH_EVENTS, "group": "tests"}
    count = REGISTRY.get_sample_value("tienda_event_batch_size_events_count", labels) or 0
    total = REGISTRY.get_sample_value("tienda_event_batch_size_events_sum", labels) or 0
    return count, total


async def test_entries_read_together_are_handled_in_one_transaction(
    redis_url: str, engine: AsyncEngine
) -> None:
    sessions: list[int] = []

    async def tracking(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        sessions.append(id(session))
        await remember(session, envelope, payload)

    publisher = RedisBroker(redis_url)
    await write_events(engine, [f"user-{i}" for i in range(30)])
    assert await OutboxRelay(engine=engine, broker=publisher).publish_batch() == 30
    transactions, events = _batches()
    reader = consumer(RedisBroker(redis_url), engine, "r1", handler=tracking, batch_size=50)
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: _pending_and_delivered(client, 30))
        assert len(await effects(engine)) == 30
        # one XREADGROUP read all 30: one session, one commit, then one XACK
        assert len(sessions) == 30 and len(set(sessions)) == 1
        assert _batches() == (transactions + 1, events + 30)
    finally:
        await reader.broker.stop()
        await publisher.stop()
        await client.aclose()


async def test_a_failing_event_holds_back_only_itself_not_its_batch(
    redis_url: str, engine: AsyncEngine
) -> None:
    async def fragile(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        await remember(session, envelope, payload)
        if payload.user_id == "poison":  # type: ignore[attr-defined]
            raise RuntimeError("bug in the handler")

    users = [f"user-{i}" for i in range(4)] + ["poison"] + [f"user-{i}" for i in range(4, 8)]
    publisher = RedisBroker(redis_url)
    await write_events(engine, users)
    await OutboxRelay(engine=engine, broker=publisher).publish_batch()
    reader = consumer(
        RedisBroker(redis_url), engine, "r1", handler=fragile, max_attempts=2, claim_idle_ms=100
    )
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        await eventually(lambda: _pending_and_delivered(client, 9))
        # the batch rolled back and its events ran one by one: each of the others once
        assert sorted(u for _, u in await effects(engine)) == sorted(set(users) - {"poison"})
        async with engine.connect() as conn:
            processed = await conn.execute(sa.text("SELECT count(*) FROM processed_events"))
            assert processed.scalar_one() == 8
        (letter,) = await DeadLetters(client, publisher).list(AUTH_EVENTS)
        assert "bug in the handler" in letter.error
    finally:
        await reader.broker.stop()
        await publisher.stop()
        await client.aclose()


async def test_a_redelivered_event_in_a_batch_is_a_duplicate_and_the_rest_apply(
    redis_url: str, engine: AsyncEngine
) -> None:
    from tienda_platform.consumers import Entry

    reader = consumer(RedisBroker(redis_url), engine, "r1")
    envelopes = await write_events(engine, ["u1", "u2", "u3"])
    bodies = [e.SerializeToString() for e in envelopes]
    await reader.handle(AUTH_EVENTS, bodies[1], b"1-0")  # u2 handled before, not acknowledged
    duplicates = _consumed("duplicate")

    await reader.handle_batch(
        AUTH_EVENTS, [Entry(id=f"{i}-1".encode(), body=b, headers={}) for i, b in enumerate(bodies)]
    )

    assert sorted(await effects(engine)) == sorted(
        (e.id, u) for e, u in zip(envelopes, ["u1", "u2", "u3"], strict=True)
    )
    assert _consumed("duplicate") == duplicates + 1
    await reader.broker.stop()


async def test_an_entry_that_carries_no_event_is_dead_lettered(
    redis_url: str, engine: AsyncEngine
) -> None:
    reader = consumer(RedisBroker(redis_url), engine, "r1", polling_ms=10)
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        # written by something other than an outbox relay: no FastStream data field
        await client.xadd(AUTH_EVENTS, {"user": "nobody"})
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        (letter,) = await DeadLetters(client, reader.broker).list(AUTH_EVENTS)
        assert "carries no event" in letter.error
        await eventually(lambda: _pending_and_delivered(client, 1))
        assert await effects(engine) == []
    finally:
        await reader.broker.stop()
        await client.aclose()


async def test_a_second_relay_waits_while_one_publishes_so_events_leave_in_order(
    redis_url: str, database_url: str
) -> None:
    """Two replicas' relays on one database (SQLite or PostgreSQL): while the first is
    publishing its batch, the second publishes nothing, not even the rows after that batch,
    which would reach the stream before the batch's own."""
    engine = create_engine(database_url)
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
    other_engine = create_engine(database_url)
    client = redis.Redis.from_url(redis_url)
    written = await write_events(engine, [f"u{i}" for i in range(6)])
    first = OutboxRelay(engine=engine, broker=RedisBroker(redis_url), batch_size=3)
    second = OutboxRelay(engine=other_engine, broker=RedisBroker(redis_url), batch_size=3)
    publishing, go_on = asyncio.Event(), asyncio.Event()
    publish = first._publish

    async def held_publish(rows: list[object]) -> None:
        publishing.set()
        await go_on.wait()
        await publish(rows)  # type: ignore[arg-type]

    first._publish = held_publish  # type: ignore[method-assign]
    try:
        first_batch = asyncio.create_task(first.publish_batch())
        await asyncio.wait_for(publishing.wait(), timeout=10)
        assert await second.publish_batch() == 0
        go_on.set()
        assert await asyncio.wait_for(first_batch, timeout=10) == 3
        assert await second.publish_batch() == 3

        published = await _published_ids(client)
        assert published == [e.id for e in written]
    finally:
        for relay in (first, second):
            await relay._broker.stop()
        await other_engine.dispose()
        await engine.dispose()
        await client.aclose()


async def _processed_ids(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT event_id FROM processed_events"))
        return {r[0] for r in rows}


async def test_events_a_handler_is_not_for_are_acknowledged_without_a_transaction(
    redis_url: str, engine: AsyncEngine
) -> None:
    """`on(..., when=...)`: the events its condition refuses are ignored (XACKed, counted as
    ignored), with no handler call and no processed-event record; the others as usual."""
    publisher = RedisBroker(redis_url)
    envelopes = await write_events(engine, ["keep-1", "skip-1", "keep-2", "skip-2"])
    assert await OutboxRelay(engine=engine, broker=publisher).publish_batch() == 4
    ignored, handled = _consumed("ignored"), _consumed("handled")
    reader = EventConsumer(
        broker=RedisBroker(redis_url), engine=engine, group="tests", consumer="r1"
    )
    reader.on(
        AUTH_EVENTS,
        "user.registered",
        remember,
        when=lambda payload: payload.user_id.startswith("keep"),  # type: ignore[attr-defined]
    )
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: _pending_and_delivered(client, 4))
        assert sorted(u for _, u in await effects(engine)) == ["keep-1", "keep-2"]
        kept = {e.id for e in envelopes if e.subject.startswith("users/keep")}
        assert await _processed_ids(engine) == kept
        assert _consumed("ignored") == ignored + 2
        assert _consumed("handled") == handled + 2
    finally:
        await reader.broker.stop()
        await publisher.stop()
        await client.aclose()


async def test_an_event_whose_condition_fails_is_dead_lettered_not_retried_for_ever(
    redis_url: str, engine: AsyncEngine
) -> None:
    from tienda_platform.dead_letters import DeadLetters

    def broken(payload: Message) -> bool:
        raise KeyError("bug in the condition")

    publisher = RedisBroker(redis_url)
    await write_events(engine, ["u1"])
    assert await OutboxRelay(engine=engine, broker=publisher).publish_batch() == 1
    reader = EventConsumer(
        broker=RedisBroker(redis_url), engine=engine, group="tests", consumer="r1"
    )
    reader.on(AUTH_EVENTS, "user.registered", remember, when=broken)
    await started(reader)
    client = redis.Redis.from_url(redis_url)
    try:
        await eventually(lambda: _exists(client, dead_letter_stream(AUTH_EVENTS)))
        await eventually(lambda: _pending_and_delivered(client, 1))
        (letter,) = await DeadLetters(client, publisher).list(AUTH_EVENTS)
        assert "its condition failed: KeyError" in letter.error
        assert await effects(engine) == []
    finally:
        await reader.broker.stop()
        await publisher.stop()
        await client.aclose()


async def test_a_batch_reaches_its_handler_without_a_thread_hop(
    redis_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler takes the batch as its decoded body: a parameter from FastStream's context
    would be resolved by fast_depends in a worker thread (anyio.to_thread) for every batch."""
    import anyio.to_thread

    hops: list[object] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func, *args, **kwargs):  # type: ignore[no-untyped-def]
        hops.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    await three_events_consumed(redis_url, engine)
    assert hops == []


async def test_subscribers_read_their_stream_settings_without_copying_them(
    redis_url: str, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FastStream's stream subscriber deep-copies its StreamSub at every read of it (three
    times per XREADGROUP) to put the prefix of a router it is included in on the name;
    tienda's subscribers are in none, and a Subscription is then its own copy."""
    import faststream.redis.schemas.stream_sub as stream_sub

    copies: list[object] = []
    deepcopy = stream_sub.deepcopy

    def counting(value, *args, **kwargs):  # type: ignore[no-untyped-def]
        copies.append(value)
        return deepcopy(value, *args, **kwargs)

    monkeypatch.setattr(stream_sub, "deepcopy", counting)
    reader = await three_events_consumed(redis_url, engine)
    assert copies == []
    settings = sorted(
        (subscriber.stream_sub for subscriber in reader.broker.subscribers),
        key=lambda sub: sub.min_idle_time or 0,
    )
    assert [(s.name, s.group, s.consumer) for s in settings] == [(AUTH_EVENTS, "tests", "r1")] * 2
    assert [s.min_idle_time for s in settings] == [None, reader.claim_idle_ms]

    # under a router's prefix, a copy with the prefixed name, as FastStream's StreamSub gives
    subscription = Subscription(AUTH_EVENTS, group="tests", consumer="r1", batch=True)
    prefixed = subscription.add_prefix("staging.")
    assert (prefixed.name, prefixed.group, prefixed.batch) == (
        f"staging.{AUTH_EVENTS}",
        "tests",
        True,
    )
    assert subscription.name == AUTH_EVENTS
    assert copies == [subscription]
