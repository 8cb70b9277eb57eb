"""The stream gauges hold what Redis says of each group: entries delivered and not yet
acknowledged (tienda_consumer_pending), entries not yet delivered (tienda_consumer_lag) and
entries in the stream's dead-letter stream (tienda_dead_letters); the ConsumerLagGrowing and
DeadLettersPresent alerts read them."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as redis
from prometheus_client import REGISTRY
from tienda_contracts.topology import Subscription, dead_letter_stream
from tienda_platform.aio import cancel_and_wait
from tienda_platform.messaging import _lag, create_broker, watch_streams
from tienda_platform.testing import eventually

pytestmark = pytest.mark.integration


def gauges(stream: str, group: str) -> tuple[float | None, float | None, float | None]:
    labels = {"stream": stream, "group": group}
    return (
        REGISTRY.get_sample_value("tienda_consumer_pending", labels),
        REGISTRY.get_sample_value("tienda_consumer_lag", labels),
        REGISTRY.get_sample_value("tienda_dead_letters", {"stream": stream}),
    )


async def test_pending_lag_and_dead_letters_follow_the_group(redis_url: str) -> None:
    stream, group = f"tienda.gauges-{uuid.uuid4().hex[:8]}.events", "gauged"
    client = redis.Redis.from_url(redis_url)
    for n in range(5):
        await client.xadd(stream, {"n": str(n)})
    await client.xgroup_create(stream, group, id="0")
    delivered = await client.xreadgroup(group, "c1", {stream: ">"}, count=2)
    for n in range(3):
        await client.xadd(dead_letter_stream(stream), {"n": str(n)})
    broker = create_broker(redis_url, service_name="gauges-test")
    subscription = Subscription(group, stream, ("gauges.tested",), "a test")
    watching = asyncio.create_task(watch_streams(broker, [subscription], interval=0.02))
    try:
        # two delivered and not acknowledged, three never delivered, three dead letters
        await eventually(lambda: gauges(stream, group) == (2, 3, 3), within=10)
        first_id = delivered[0][1][0][0]
        await client.xack(stream, group, first_id)
        await client.xreadgroup(group, "c1", {stream: ">"}, count=2)
        await client.delete(dead_letter_stream(stream))
        await eventually(lambda: gauges(stream, group) == (3, 1, 0), within=10)
    finally:
        await cancel_and_wait([watching])
        await broker.stop()
        await client.aclose()


async def test_lag_counted_by_hand_is_what_redis_reports(redis_url: str) -> None:
    """The lag of a group as it is counted where XINFO GROUPS has no `lag` (Redis 6, as the
    embedded server is), over more entries than one XRANGE page; the same as Redis 7's."""
    stream, group = f"tienda.lag-{uuid.uuid4().hex[:8]}.events", "counted"
    client = redis.Redis.from_url(redis_url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for n in range(2_345):
                pipe.xadd(stream, {"n": str(n)})
            await pipe.execute()
        await client.xgroup_create(stream, group, id="0")
        delivered = 0
        for count in (0, 7, 1_200):
            if count:
                await client.xreadgroup(group, "c1", {stream: ">"}, count=count)
                delivered += count
            (info,) = await client.xinfo_groups(stream)
            counted = await _lag(client, stream, info["last-delivered-id"])
            assert counted == 2_345 - delivered
            assert info.get("lag", counted) == counted
    finally:
        await client.aclose()
