"""Redis and FastStream tracing on a real Redis: commands are traced in sampled traces only,
and the stream batches EventConsumer reads do not go through FastStream's span middleware."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import opentelemetry.instrumentation.redis as redis_instrumentation
import pytest
import redis.asyncio as redis
import redis.asyncio.client as redis_client
from faststream import BaseMiddleware
from faststream.opentelemetry.middleware import BaseTelemetryMiddleware
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from tienda_platform.messaging import EventTelemetryMiddleware
from tienda_platform.telemetry import QuietSampler, trace_redis_only_in_sampled_traces
from wrapt import FunctionWrapper

pytestmark = pytest.mark.integration

_METHODS = (
    (redis_client.Redis, "execute_command"),
    (redis_client.Pipeline, "execute"),
    (redis_client.Pipeline, "immediate_execute_command"),
)


@pytest.fixture
def traced_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[InMemorySpanExporter, list]]:
    """The Redis instrumentation with tienda's layer, on a provider of the test's; and every
    command the instrumentation formatted (its first step, before asking the sampler)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=QuietSampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    formatted: list = []
    original_format = redis_instrumentation._format_command_args

    def counting_format(args: Any) -> Any:
        formatted.append(args[0])
        return original_format(args)

    monkeypatch.setattr(redis_instrumentation, "_format_command_args", counting_format)
    # another test of this process may have instrumented Redis already (configure_tracing):
    # start from the client's own methods, and put back whatever was there
    instrumentor = RedisInstrumentor()
    saved = {(cls, name): cls.__dict__[name] for cls, name in _METHODS}
    was_instrumented = instrumentor.is_instrumented_by_opentelemetry
    for (cls, name), method in saved.items():
        while isinstance(method, FunctionWrapper):
            method = method.__wrapped__
        setattr(cls, name, method)
    instrumentor._is_instrumented_by_opentelemetry = False
    instrumentor.instrument(tracer_provider=provider)
    try:
        trace_redis_only_in_sampled_traces()
        trace_redis_only_in_sampled_traces()  # idempotent: one layer, not two
        yield exporter, formatted
    finally:
        for (cls, name), method in saved.items():
            setattr(cls, name, method)
        instrumentor._is_instrumented_by_opentelemetry = was_instrumented


async def test_redis_commands_are_traced_in_sampled_traces_only(
    redis_url: str, traced_redis: tuple[InMemorySpanExporter, list]
) -> None:
    exporter, formatted = traced_redis
    provider = TracerProvider(sampler=ParentBasedTraceIdRatio(0.0))  # a trace not kept
    kept = TracerProvider()  # a trace kept
    client = redis.Redis.from_url(redis_url)
    try:
        await client.set("tienda:test:traced", "1")  # outside any trace: a poll, say
        with provider.get_tracer("t").start_as_current_span("not sampled"):
            await client.get("tienda:test:traced")
        with kept.get_tracer("t").start_as_current_span("POST /v1/orders"):
            await client.get("tienda:test:traced")
            async with client.pipeline() as pipeline:
                pipeline.get("tienda:test:traced").incr("tienda:test:counter")
                assert await pipeline.execute() == [b"1", 1]
        await client.delete("tienda:test:traced", "tienda:test:counter")
    finally:
        await client.aclose()

    spans = exporter.get_finished_spans()
    assert [(s.name, s.attributes["db.statement"]) for s in spans] == [
        ("GET", "GET ?"),
        ("GET INCRBY", "GET ?\nINCRBY ? ?"),
    ]
    assert all(s.attributes["db.system"] == "redis" for s in spans)
    # the commands outside a sampled trace never reached the instrumentation
    assert formatted == ["GET"]


def test_stream_batches_skip_faststreams_span_middleware_and_the_rest_go_through() -> None:
    middleware = EventTelemetryMiddleware()
    batch = {"type": "bstream", "channel": "tienda.order.events", "data": [], "message_ids": []}
    single = {"type": "stream", "channel": "tienda.order.events", "data": {}, "message_ids": []}

    skipped = middleware(batch, context=None)
    assert type(skipped) is BaseMiddleware
    assert isinstance(middleware(single, context=None), BaseTelemetryMiddleware)
    assert isinstance(middleware(None, context=None), BaseTelemetryMiddleware)  # publishing
