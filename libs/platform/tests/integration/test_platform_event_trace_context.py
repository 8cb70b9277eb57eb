"""An event's trace context is W3C Trace Context in its envelope, whatever the process's
propagators (OTEL_PROPAGATORS) put in headers and gRPC metadata: a request's trace goes on
through the outbox, the relay and the consumer, on a real Redis, under propagators that carry
no traceparent at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from opentelemetry import propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS
from tienda_platform import telemetry
from tienda_platform.consumers import EventConsumer
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope, build_envelope, traced_context
from tienda_platform.outbox import OutboxRelay, record_event
from tienda_platform.testing import eventually

pytestmark = pytest.mark.integration


@pytest.fixture
def spans(recorded_spans: InMemorySpanExporter) -> Iterator[InMemorySpanExporter]:
    """Spans recorded (tienda_platform.testing), with propagators that carry baggage only
    (OTEL_PROPAGATORS=baggage): headers and metadata hold no trace context."""
    propagators = propagate.get_global_textmap()
    propagate.set_global_textmap(CompositePropagator([W3CBaggagePropagator()]))
    try:
        yield recorded_spans
    finally:
        propagate.set_global_textmap(propagators)


def _w3c(span: trace.Span) -> str:
    context = span.get_span_context()
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


def _named(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    [span] = [s for s in exporter.get_finished_spans() if s.name == name]
    return span


def test_an_envelope_names_the_current_span_in_w3c_form(spans: InMemorySpanExporter) -> None:
    payload = events_pb2.UserRegistered(user_id="u1", email="u1@x.io")
    with telemetry.tracer.start_as_current_span("POST /v1/users", kind=SpanKind.SERVER) as span:
        envelope = build_envelope(
            event_type="user.registered", source="auth_service", subject="users/u1", payload=payload
        )
        kept_with_a_saga = telemetry.current_traceparent()
    assert envelope.traceparent == _w3c(span) == kept_with_a_saga
    assert envelope.tracestate == ""
    outside = build_envelope(
        event_type="user.registered", source="auth_service", subject="users/u1", payload=payload
    )
    assert outside.traceparent == "" and telemetry.current_traceparent() == ""


def test_deferred_work_joins_the_trace_its_traceparent_names(
    spans: InMemorySpanExporter,
) -> None:
    with telemetry.tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER) as span:
        traceparent = telemetry.current_traceparent()
    with telemetry.span_in_trace("saga step reserve", traceparent, order_id="o1"):
        pass
    with telemetry.span_in_trace("email send", "00-not-a-traceparent-01"):
        pass
    step = _named(spans, "saga step reserve")
    assert step.parent is not None and step.parent.span_id == span.get_span_context().span_id
    assert step.context.trace_id == span.get_span_context().trace_id
    assert step.attributes == {"order.id": "o1"}
    assert _named(spans, "email send").parent is None  # a trace of its own


def test_traced_context_reads_a_w3c_traceparent_and_its_tracestate() -> None:
    parent = traced_context(
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "vendor=value"
    )
    context = trace.get_current_span(parent).get_span_context()
    assert (context.trace_id, context.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert context.is_remote and context.trace_flags.sampled
    assert context.trace_state.to_header() == "vendor=value"
    for nothing in ("", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", "junk"):
        assert not trace.get_current_span(traced_context(nothing)).get_span_context().is_valid


async def test_a_requests_trace_goes_on_through_the_relay_and_the_consumer(
    spans: InMemorySpanExporter, redis_url: str, platform_engine: AsyncEngine
) -> None:
    with telemetry.tracer.start_as_current_span("POST /v1/users", kind=SpanKind.SERVER) as request:
        async with session_factory(platform_engine)() as session, session.begin():
            record_event(
                session,
                source="auth_service",
                event_type="user.registered",
                subject="users/u1",
                payload=events_pb2.UserRegistered(user_id="u1", email="u1@x.io"),
            )
    handled: list[EventEnvelope] = []

    async def handler(_session: AsyncSession, envelope: EventEnvelope, _payload: Message) -> None:
        handled.append(envelope)

    publisher = RedisBroker(redis_url)
    reader = EventConsumer(
        broker=RedisBroker(redis_url), engine=platform_engine, group="g", consumer="c"
    )
    reader.on(AUTH_EVENTS, "user.registered", handler)
    await reader.declare()
    await reader.broker.start()
    try:
        assert await OutboxRelay(engine=platform_engine, broker=publisher).publish_batch() == 1
        await eventually(lambda: len(handled) == 1)
    finally:
        await reader.broker.stop()
        await publisher.stop()
    trace_id = request.get_span_context().trace_id
    relayed = _named(spans, "outbox relay user.registered")
    consumed = _named(spans, f"{AUTH_EVENTS} handle user.registered")
    # the entry's headers carry no trace context here: the consumer reads the envelope's
    assert relayed.context.trace_id == consumed.context.trace_id == trace_id
    assert relayed.parent is not None and consumed.parent is not None
    assert relayed.parent.span_id == consumed.parent.span_id == request.get_span_context().span_id
    assert relayed.kind is SpanKind.PRODUCER and consumed.kind is SpanKind.CONSUMER
