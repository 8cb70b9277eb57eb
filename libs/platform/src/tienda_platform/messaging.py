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
from loguru import logger
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import REGISTRY, Gauge
from prometheus_client.metrics import MetricWrapperBase
from redis.exceptions import RedisError
from tienda_contracts.topology import Subscription, dead_letter_stream

from tienda_platform import telemetry
from tienda_platform.consumers import EventConsumer
from tienda_platform.metrics import child, metrics_enabled

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
    """A RedisBroker with FastStream's OpenTelemetry middleware (when tracing is on) and
    Prometheus middleware (when metrics are on)."""
    middlewares: list = []
    if metrics_enabled():
        middlewares.append(prometheus_middleware(service_name))
    if telemetry.tracing_configured():
        middlewares.insert(0, EventTelemetryMiddleware())
    # logger=None: the services log through loguru, not FastStream's own logger.
    return RedisBroker(redis_url, middlewares=middlewares, logger=None)  # type: ignore[arg-type]


def prometheus_middleware(service_name: str) -> RedisPrometheusMiddleware:
    """FastStream's Prometheus middleware, whose metrics look up each label set's child once
    (see CachedChildren)."""
    middleware = RedisPrometheusMiddleware(registry=REGISTRY, app_name=service_name)
    container = middleware._metrics_container
    for name in type(container).__slots__:
        metric = getattr(container, name, None)
        if isinstance(metric, MetricWrapperBase):
            setattr(container, name, CachedChildren(metric))
    return middleware


class CachedChildren:
    """A metric whose labels(**values) gives the child of that label set from
    tienda_platform.metrics.child after the first time. FastStream's MetricsManager calls
    labels() for every message published and received, six times per message handled."""

    __slots__ = ("_metric",)

    def __init__(self, metric: MetricWrapperBase) -> None:
        self._metric = metric

    def labels(self, **values: str) -> Any:
        return child(self._metric, **values)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)


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


async def start_consumers(
    broker: RedisBroker, consumers: Sequence[EventConsumer], *, wait: float = 5.0
) -> asyncio.Task[None]:
    """Declare the consumers' groups (from the start of their streams) and start the broker,
    in a task that retries until Redis answers; wait up to `wait` seconds for it.

    With Redis up this is the usual start. With Redis down the service serves anyway: its
    commands commit, their events wait in the outbox (the relay retries on its own), and
    the consumers start, missing nothing, once Redis is back. Cancel the task on shutdown."""
    started = asyncio.create_task(_start_when_redis_answers(broker, consumers))
    await asyncio.wait([started], timeout=wait)
    if started.done():
        started.result()  # anything but Redis being away is a bug: let it stop the start-up
    return started


async def _start_when_redis_answers(
    broker: RedisBroker, consumers: Sequence[EventConsumer]
) -> None:
    delay = 0.1
    while True:
        try:
            for consumer in consumers:
                await consumer.declare()
            await broker.start()
            if delay > 0.1:
                logger.info("Redis answers: the event consumers have started")
            return
        except (RedisError, OSError) as error:
            if delay == 0.1:
                logger.warning(
                    "Redis cannot be reached ({error}): serving without event consumers, "
                    "which start once it answers; events wait in the outbox meanwhile",
                    error=f"{type(error).__name__}: {error}",
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


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
    """Refresh the pending, lag and dead-letter gauges of these groups until cancelled
    (returns at once when metrics are off). Every Exception around the Redis calls is
    suppressed, and redis-py can drop a cancellation: stop it with
    tienda_platform.aio.cancel_and_wait, as run_until_signalled does."""
    if not metrics_enabled():
        return
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
