"""Redis and FastStream tracing on a real Redis: commands are traced in sampled traces only,
and the stream batches EventConsumer reads do not go through FastStream's span middleware."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import opentelemetry.instrumentation.redis as redis_instrumentation
import pytest
import redis.asyncio as redis
import redis.asyncio.client as redis_client
from faststream import BaseMiddleware
from faststream.opentelemetry.middleware import BaseTelemetryMiddleware
from faststream.redis import RedisBroker
from faststream.redis.parser import BinaryMessageFormatV1
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from opentelemetry.trace import SpanKind
from tienda_platform.messaging import EventTelemetryMiddleware
from tienda_platform.statement_spans import instrument_redis, trace_redis_only_in_sampled_traces
from tienda_platform.telemetry import QuietSampler
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
    try:
        instrument_redis(provider)  # as the services install it
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
            # the outbox relay's round trip: a batch of XADDs, whatever its length
            for length in (3, 1):
                async with client.pipeline(transaction=False) as pipeline:
                    for number in range(length):
                        pipeline.xadd("tienda:test:stream", {"n": number})
                    await pipeline.execute()
        await client.delete("tienda:test:traced", "tienda:test:counter", "tienda:test:stream")
    finally:
        await client.aclose()

    spans = exporter.get_finished_spans()
    # a pipeline is named as a batch (one command's name, when that is all it holds)
    assert [(s.name, s.attributes["db.redis.pipeline_length"]) for s in spans[1:]] == [
        ("BATCH", 2),
        ("BATCH XADD", 3),
        ("XADD", 1),
    ]
    assert [(s.name, s.attributes["db.statement"]) for s in spans[:2]] == [
        ("GET", "GET ?"),
        ("BATCH", "GET ?\nINCRBY ? ?"),
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


async def test_a_publish_under_the_relays_span_takes_it_as_its_creation_context(
    redis_url: str,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    broker = RedisBroker(
        redis_url, middlewares=[EventTelemetryMiddleware(tracer_provider=provider)]
    )
    stream = f"tienda.test.publish.{uuid.uuid4().hex}"
    await broker.connect()
    try:
        with tracer.start_as_current_span("outbox relay order.created", kind=SpanKind.PRODUCER):
            await broker.publish(b"relayed", stream=stream)
        await broker.publish(b"on its own", stream=stream)  # no span: FastStream's own
        client = await broker.connect()
        entries = await client.xrange(stream)
        await client.delete(stream)
    finally:
        await broker.stop()

    spans = {s.name: s for s in exporter.get_finished_spans()}
    relay = spans["outbox relay order.created"]
    published = [s for s in exporter.get_finished_spans() if s.name == f"{stream} publish"]
    created = [s for s in exporter.get_finished_spans() if s.name == f"{stream} create"]
    assert len(published) == 2 and len(created) == 1
    under_relay = [s for s in published if s.context.trace_id == relay.context.trace_id]
    assert len(under_relay) == 1
    assert under_relay[0].parent is not None
    assert under_relay[0].parent.span_id == relay.context.span_id
    # the relayed entry's headers name the relay span, for the consumers' spans to follow
    headers = [BinaryMessageFormatV1.parse(fields[b"__data__"])[1] for _, fields in entries]
    assert headers[0]["traceparent"].split("-")[2] == format(relay.context.span_id, "016x")
    assert headers[1]["traceparent"].split("-")[2] == format(created[0].context.span_id, "016x")
