"""The span encoder writes the very message the OpenTelemetry OTLP encoder builds."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from tienda_platform.otlp import FastOTLPSpanExporter, SpanEncoder

pytestmark = pytest.mark.unit


def provider(
    kept: InMemorySpanExporter, service: str, limits: SpanLimits | None = None
) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": "1.2.3"}),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider


@pytest.fixture
def spans() -> Iterator[list[ReadableSpan]]:
    """Spans with every kind of content: each value type, events, links, statuses, remote
    and local parents, trace state, dropped counts, two scopes and two resources."""
    kept = InMemorySpanExporter()
    first = provider(kept, "order_service")
    limited = provider(
        kept, "product_service", SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    )
    tracer = first.get_tracer("tienda", "0.1.0", schema_url="https://opentelemetry.io/schemas/1")
    sql = first.get_tracer("tienda.sql")
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    values = {
        "text": "SELECT orders.id FROM orders WHERE orders.id = ?",
        "empty": "",
        "unicode": "café ☕",
        "yes": True,
        "no": False,
        "zero": 0,
        "negative": -42,
        "large": 2**62 + 5,
        "ratio": 0.25,
        "strings": ("a", "b"),
        "numbers": (1, -2, 3),
        "flags": (True, False),
        "floats": (1.5, -0.0),
    }
    with tracer.start_as_current_span(
        "tienda.order.events handle order.created",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=trace.SpanKind.CONSUMER,
        attributes=values,
        links=[Link(remote, {"link.kind": "batch"}), Link(remote)],
    ) as handling:
        handling.add_event("retry", {"attempt": 2, "reason": "locked"})
        handling.add_event("plain")
        for number in range(5):
            statement = sql.start_span(
                "SELECT order.db",
                kind=trace.SpanKind.CLIENT,
                attributes={"db.system": "sqlite", "db.statement": f"SELECT {number % 2}"},
            )
            if number == 3:
                statement.set_status(Status(StatusCode.ERROR, "database is locked"))
            statement.end()
        with tracer.start_as_current_span("saga pay", kind=trace.SpanKind.PRODUCER) as ok:
            ok.set_status(Status(StatusCode.OK))
            try:
                raise ValueError("declined")
            except ValueError as error:
                ok.record_exception(error)
    crowded = limited.get_tracer("tienda").start_span(
        "crowded",
        kind=trace.SpanKind.SERVER,
        attributes={"a": 1, "b": 2, "c": 3},
        links=[Link(remote), Link(remote)],
    )
    crowded.add_event("one")
    crowded.add_event("two")
    crowded.end()
    yield list(kept.get_finished_spans())
    first.shutdown()
    limited.shutdown()


def test_a_batch_encodes_to_the_message_the_sdk_encoder_builds(spans: list[ReadableSpan]) -> None:
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().request(spans))
    assert ours == encode_spans(spans)
    # and it holds what the fixture made: two resources, the first with two scopes
    assert [len(r.scope_spans) for r in ours.resource_spans] == [2, 1]
    crowded = ours.resource_spans[1].scope_spans[0].spans[0]
    assert (
        crowded.dropped_attributes_count,
        crowded.dropped_events_count,
        crowded.dropped_links_count,
    ) == (1, 1, 1)


def test_attributes_taken_from_the_cache_encode_the_same(spans: list[ReadableSpan]) -> None:
    encoder = SpanEncoder(cache_size=3)  # emptied again and again on the way
    expected = encode_spans(spans)
    for _ in range(3):
        assert ExportTraceServiceRequest.FromString(encoder.request(spans)) == expected


def test_the_exporter_sends_the_same_request(spans: list[ReadableSpan]) -> None:
    exporter = FastOTLPSpanExporter(endpoint="localhost:4317", insecure=True)
    try:
        assert exporter._translate_data(spans) == encode_spans(spans)
    finally:
        exporter.shutdown()
