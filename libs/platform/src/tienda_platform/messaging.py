"""The FastStream RedisBroker every service uses, with tracing and Prometheus middlewares, and
the consumer-group gauges (pending, lag, dead letters) of Redis Streams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from faststream import BaseMiddleware
from faststream.redis import RedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.prometheus import RedisPrometheusMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
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
        middlewares.insert(0, EventTelemetryMiddleware())
    # logger=None: the services log through loguru, not FastStream's own logger.
    return RedisBroker(redis_url, middlewares=middlewares, logger=None)  # type: ignore[arg-type]


class EventTelemetryMiddleware(RedisTelemetryMiddleware):
    """FastStream's telemetry middleware, for every message but the stream batches that
    EventConsumer reads.

    Each event of such a batch gets a consumer span from EventConsumer, in the trace of the
    request that caused it. FastStream would add a span for the batch as a whole: a root of
    no trace (a batch mixes events of many), which QuietSampler drops with everything under
    it, after the middleware had extracted a link from every entry's headers. Those batches
    skip the middleware; publishing, and any other subscriber, go through it.

    A publish made under a recording span (the outbox relay's span of the event) takes that
    span as the message's creation context, as FastStream does for a publish made while
    handling a message: the `publish` span is its child and the entry's headers carry it.
    Otherwise FastStream starts a `create` span of its own for every message, a second
    producer span between the relay's and the `publish`."""

    def __call__(self, msg: Any, /, *, context: Any) -> Any:
        if isinstance(msg, dict) and msg.get("type") == "bstream":
            return BaseMiddleware(msg, context=context)
        middleware = super().__call__(msg, context=context)
        if msg is None and (span := trace.get_current_span()).is_recording():
            # what BaseTelemetryMiddleware.consume_scope sets for the publishes of a handler
            middleware._current_span = span
            middleware._origin_context = otel_context.get_current()
        return middleware


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
    # The refresh suppresses every Exception around its Redis calls, and a cancellation
    # landing inside one can come out as such (redis-py) and be swallowed: cancel it until
    # it ends.
    task = asyncio.create_task(_refresh_gauges(broker, subscriptions, interval))
    try:
        await asyncio.shield(task)
    finally:
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)


async def _refresh_gauges(
    broker: RedisBroker, subscriptions: Sequence[Subscription], interval: float
) -> None:
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
