"""The FastStream RedisBroker every service uses, with tracing and Prometheus middlewares, and
the consumer-group gauges (pending, lag, dead letters) of Redis Streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from faststream.redis import RedisBroker
from faststream.redis.prometheus import RedisPrometheusMiddleware
from prometheus_client import REGISTRY, Gauge
from tienda_contracts.topology import Subscription, dead_letter_stream

from tienda_platform import telemetry

CONSUMER_PENDING = Gauge(
    "tienda_consumer_pending",
    "Entries delivered to a group but not yet acknowledged.",
    ["stream", "group"],
)
CONSUMER_LAG = Gauge(
    "tienda_consumer_lag", "Entries of a stream the group has not read yet.", ["stream", "group"]
)
DEAD_LETTERS = Gauge("tienda_dead_letters", "Entries in a dead-letter stream.", ["stream"])


def create_broker(redis_url: str, *, service_name: str) -> RedisBroker:
    """A RedisBroker with FastStream's OpenTelemetry and Prometheus middlewares."""
    middlewares: list = [RedisPrometheusMiddleware(registry=REGISTRY, app_name=service_name)]
    if telemetry.tracing_configured():
        from faststream.redis.opentelemetry import RedisTelemetryMiddleware

        middlewares.insert(0, RedisTelemetryMiddleware())
    # logger=None: the services log through loguru, not FastStream's own logger.
    return RedisBroker(redis_url, middlewares=middlewares, logger=None)  # type: ignore[arg-type]


async def _lag(client: Any, stream: str, last_delivered: bytes) -> int:
    """Entries after last_delivered (Redis 6 has no `lag` in XINFO GROUPS)."""
    count = 0
    start = b"(" + last_delivered
    while True:
        batch = await client.xrange(stream, min=start, max="+", count=1000)
        count += len(batch)
        if len(batch) < 1000:
            return count
        start = b"(" + batch[-1][0]


async def watch_streams(
    broker: RedisBroker, subscriptions: Sequence[Subscription], interval: float = 5.0
) -> None:
    """Refresh the pending, lag and dead-letter gauges of these groups until cancelled."""
    while True:
        with contextlib.suppress(Exception):
            client = await broker.connect()
            for sub in subscriptions:
                groups = await client.xinfo_groups(sub.stream)
                info = next((g for g in groups if g["name"].decode() == sub.group), None)
                if info is None:
                    continue
                CONSUMER_PENDING.labels(sub.stream, sub.group).set(info["pending"])
                lag = info.get("lag")
                if lag is None:
                    lag = await _lag(client, sub.stream, info["last-delivered-id"])
                CONSUMER_LAG.labels(sub.stream, sub.group).set(lag)
                DEAD_LETTERS.labels(sub.stream).set(
                    await client.xlen(dead_letter_stream(sub.stream))
                )
        await asyncio.sleep(interval)
