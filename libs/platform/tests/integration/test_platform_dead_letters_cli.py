"""`python -m tienda_platform.dead_letters` (`make dead-letters`) as an operator runs it: a
process of its own, on a real Redis named by REDIS_URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from faststream.redis.parser import BinaryMessageFormatV1
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_contracts.topology import PRODUCT_EVENTS, dead_letter_stream
from tienda_platform.consumers import REPLAYED_FOR, EventConsumer
from tienda_platform.database import create_engine
from tienda_platform.events import EventEnvelope, build_envelope
from tienda_platform.redis_server import EMBEDDED_REDIS_URL_FILE, free_port

pytestmark = pytest.mark.integration

# The command accepts only the streams of the topology (--stream choices), so the test works
# on one of them, in the empty database the redis_url fixture gives it.
STREAM = PRODUCT_EVENTS
DEAD_LETTERS = dead_letter_stream(STREAM)
GROUP = "dead-letters-cli-tests"


async def cli(
    *args: str, redis_url: str | None = None, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the command in a process of its own (REDIS_URL set to redis_url when given, and
    TIENDA_DATA_DIR to data_dir)."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "TIENDA_DATA_DIR")}
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    if data_dir is not None:
        env["TIENDA_DATA_DIR"] = str(data_dir)
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "tienda_platform.dead_letters", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}")
    yield engine
    await engine.dispose()


@pytest.fixture
async def consumer(redis_url: str, engine: AsyncEngine) -> AsyncIterator[EventConsumer]:
    """A consumer of STREAM that never runs a handler: the test dead-letters by hand."""
    broker = RedisBroker(redis_url)
    consumer = EventConsumer(broker=broker, engine=engine, group=GROUP, consumer="c1")
    consumer.on(STREAM, "product.updated", _unreachable)
    await consumer.declare()
    yield consumer
    await broker.stop()


async def _unreachable(*_: object) -> None:
    raise AssertionError("the consumer is never started")


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    await client.delete(STREAM, DEAD_LETTERS)
    await client.aclose()


async def dead_letter(
    consumer: EventConsumer, client: redis.Redis, product_id: str, error: str
) -> tuple[EventEnvelope, bytes]:
    """Publish an event, read it as the consumer's group and dead-letter it as the consumer
    does after its last attempt; the event and the entry id it had."""
    event = build_envelope(
        event_type="product.updated",
        source="product_service",
        subject=f"products/{product_id}",
        payload=events_pb2.ProductChanged(product_id=product_id, name="Mug", price_cents=1200),
    )
    body = event.SerializeToString()
    entry_id = await consumer.broker.publish(body, stream=STREAM)
    await client.xreadgroup(GROUP, "c1", {STREAM: ">"})
    await consumer.dead_letter(STREAM, entry_id, body, error)
    return event, entry_id


async def test_list_replay_and_purge_dead_letters_from_the_command_line(
    redis_url: str, consumer: EventConsumer, client: redis.Redis
) -> None:
    event, entry_id = await dead_letter(consumer, client, "p1", "RuntimeError: bug in the handler")
    assert not await client.xpending_range(STREAM, GROUP, min="-", max="+", count=10)
    letters: Any = await client.xrange(DEAD_LETTERS)
    ((letter_id, _),) = letters

    # list: every stream by default, one line per dead letter
    listed = await cli("list", redis_url=redis_url)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    fields = line.split("\t")
    assert fields[:5] == [STREAM, letter_id.decode(), GROUP, "product.updated", event.id]
    assert fields[6] == "RuntimeError: bug in the handler"

    # replay: the event is back on its stream, for its group only, and no longer dead
    replayed = await cli("replay", "--stream", STREAM, redis_url=redis_url)
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines() == [f"{STREAM}: replayed 1"]
    assert await client.xlen(DEAD_LETTERS) == 0
    entries: Any = await client.xrange(STREAM)
    (original, (again_id, again)) = entries
    assert original[0] == entry_id
    body, headers = BinaryMessageFormatV1.parse(again[b"__data__"])
    assert EventEnvelope.FromString(body) == event
    assert headers[REPLAYED_FOR] == GROUP
    # a consumer of the group reads it as a new entry
    read: Any = await client.xreadgroup(GROUP, "c1", {STREAM: ">"})
    ((_, [(read_id, _)]),) = read
    assert read_id == again_id

    listed = await cli("list", "--stream", STREAM, redis_url=redis_url)
    assert (listed.returncode, listed.stdout) == (0, "")

    # purge: the dead letters are dropped, not replayed
    await consumer.dead_letter(STREAM, again_id, body, "RuntimeError: still broken")
    await dead_letter(consumer, client, "p2", "undecodable: whatever")
    purged = await cli("purge", "--stream", STREAM, redis_url=redis_url)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.splitlines() == [f"{STREAM}: purged 2"]
    assert await client.xlen(DEAD_LETTERS) == 0
    assert await client.xlen(STREAM) == 3  # nothing published by the purge
    listed = await cli("list", redis_url=redis_url)
    assert (listed.returncode, listed.stdout) == (0, "")


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        pytest.param((), "the following arguments are required: command", id="no command"),
        pytest.param(("relist",), "invalid choice: 'relist'", id="unknown command"),
        pytest.param(
            ("list", "--stream", "tienda.nope.events"),
            "invalid choice: 'tienda.nope.events'",
            id="unknown stream",
        ),
    ],
)
async def test_a_bad_invocation_says_what_is_wrong_without_a_traceback(
    args: tuple[str, ...], complaint: str
) -> None:
    # no Redis is needed (nor reached: port 1 refuses) to refuse the arguments
    done = await cli(*args, redis_url="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    assert "usage:" in done.stderr and complaint in done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


async def test_an_unreachable_redis_is_a_clear_error_without_a_traceback() -> None:
    done = await cli("list", "--redis-url", f"redis://127.0.0.1:{free_port()}/0")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "127.0.0.1" in done.stderr


async def test_without_redis_url_it_finds_the_embedded_redis_of_make_run(
    redis_url: str, consumer: EventConsumer, client: redis.Redis, tmp_path: Path
) -> None:
    """`make run` writes its embedded Redis's URL into the data folder for as long as it runs;
    `make dead-letters` on that folder needs no --redis-url."""
    event, _ = await dead_letter(consumer, client, "p2", "RuntimeError: bug")
    (tmp_path / EMBEDDED_REDIS_URL_FILE).write_text(redis_url + "\n")
    listed = await cli("list", "--stream", STREAM, data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    assert line.split("\t")[4] == event.id
    # REDIS_URL, when set, still wins over the file
    elsewhere = f"redis://127.0.0.1:{free_port()}/0"
    refused = await cli("list", redis_url=elsewhere, data_dir=tmp_path)
    assert refused.returncode == 2 and elsewhere in refused.stderr
