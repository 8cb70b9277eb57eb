"""The span encoder writes the very message the OpenTelemetry OTLP encoder builds, in C for
the spans of the common shape and in Python for the others, the same bytes either way."""

from __future__ import annotations

import random
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from tienda_platform._otlp import encode_spans as c_encode_spans
from tienda_platform.otlp import FastOTLPSpanExporter, SpanEncoder, _field
from tienda_platform.spans import LeanSpan, LeanTracerProvider

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


def remote_context(
    span_id: int = 0x00F067AA0BA902B7, trace_state: TraceState | None = None
) -> SpanContext:
    """The context of a sampled span in another process."""
    return SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=span_id,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=trace_state,
    )


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
    remote = remote_context(trace_state=TraceState([("vendor", "value"), ("other", "x")]))
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


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """A real OTLP/gRPC trace receiver: keeps every request it is sent."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []

    def Export(self, request: ExportTraceServiceRequest, context: object) -> object:
        self.requests.append(request)
        return ExportTraceServiceResponse()


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, int]]:
    kept = Receiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(kept, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield kept, port
    server.stop(None)


def test_the_exporter_sends_the_sdk_request_over_grpc(
    spans: list[ReadableSpan], receiver: tuple[Receiver, int]
) -> None:
    """The request's bytes go out as SpanEncoder wrote them, and the receiver parses the
    message the SDK's exporter would have sent, once per export; after the channel is opened
    again (as the exporter does after an UNAVAILABLE) it still sends bytes."""
    kept, port = receiver
    exporter = FastOTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True)
    try:
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter._initialize_channel_and_stub()
        assert exporter.export(spans[:2]) == SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    assert kept.requests == [encode_spans(spans), encode_spans(spans[:2])]


def lean_spans(kept: InMemorySpanExporter) -> LeanTracerProvider:
    provider = LeanTracerProvider(resource=Resource.create({"service.name": "order_service"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    return provider


def written_both_ways(spans: list[ReadableSpan]) -> tuple[bytes, bytes, list[ReadableSpan]]:
    """The `spans` fields of a ScopeSpans message as encode_spans writes them, as written
    with every span by SpanEncoder.span, and the spans that encode_spans handed to Python."""
    encoder = SpanEncoder()
    refused: list[ReadableSpan] = []

    def fallback(span: ReadableSpan) -> bytes:
        refused.append(span)
        return encoder.span(span)

    in_c = c_encode_spans(spans, LeanSpan, fallback)
    in_python = b"".join(_field(b"\x12", encoder.span(span)) for span in spans)
    return in_c, in_python, refused


def test_lean_spans_of_the_common_shape_are_written_in_c_as_python_writes_them() -> None:
    kept = InMemorySpanExporter()
    provider = lean_spans(kept)
    tracer = provider.get_tracer("tienda")
    remote = remote_context(span_id=0xFFFFFFFFFFFFFFFF)  # the largest: eight bytes, all set
    values: dict[str, str | bool | int | float] = {
        "text": "SELECT orders.id FROM orders WHERE orders.id = ?",
        "long": "x" * 300,  # a length of two varint bytes
        "empty": "",
        "unicode": "café ☕",
        "yes": True,
        "no": False,
        "zero": 0,
        "small": 127,
        "two bytes": 128,
        "negative": -1,
        "lowest": -(2**63),
        "highest": 2**63 - 1,
        "ratio": 0.25,
        "negative zero": -0.0,
        "infinite": float("inf"),
    }
    with tracer.start_as_current_span(
        "tienda.order.events handle order.created",
        context=trace.set_span_in_context(NonRecordingSpan(remote)),
        kind=trace.SpanKind.CONSUMER,
        attributes=values,
    ):
        for number, kind in enumerate(trace.SpanKind):
            span = tracer.start_span(f"span {number}", kind=kind, attributes={"n": number})
            if number == 1:
                span.set_status(Status(StatusCode.ERROR, "database is locked"))
            if number == 2:
                span.set_status(Status(StatusCode.OK))
            if number == 3:
                span.set_status(Status(StatusCode.ERROR))
            span.end()
    tracer.start_span("a root, no attributes").end()
    # spans of many traces, in turn: more trace ids than the C side remembers in one call
    roots = [tracer.start_span(f"root {number}") for number in range(150)]
    for root in roots:
        tracer.start_span("child", context=trace.set_span_in_context(root)).end()
        root.end()
    spans = list(kept.get_finished_spans())
    in_c, in_python, refused = written_both_ways(spans)

    assert all(type(span) is LeanSpan for span in spans)
    assert in_c == in_python
    assert refused == []
    ours = ExportTraceServiceRequest.FromString(SpanEncoder().request(spans))
    assert ours == encode_spans(spans)
    provider.shutdown()


def test_spans_of_other_shapes_are_written_by_the_python_encoder(
    spans: list[ReadableSpan],
) -> None:
    """Events, links, a trace state, a value that is not plain, an attribute dict grown past
    its limit, an int beyond 64 bits, a span of the SDK's: each goes to the fallback, which
    writes it; the spans around them are still written in C."""
    kept = InMemorySpanExporter()
    provider = LeanTracerProvider(
        resource=Resource.create({"service.name": "order_service"}),
        span_limits=SpanLimits(max_span_attributes=2),
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("tienda")
    stated = remote_context(trace_state=TraceState([("vendor", "value")]))
    common = tracer.start_span("common", attributes={"a": 1})
    common.end()
    with_event = tracer.start_span("with an event")
    with_event.add_event("retry")
    with_event.end()
    tracer.start_span("with a link", links=[Link(stated)]).end()
    tracer.start_span(
        "in a trace with state", context=trace.set_span_in_context(NonRecordingSpan(stated))
    ).end()
    tracer.start_span("with a tuple", attributes={"numbers": (1, 2)}).end()
    tracer.start_span("past the limit", attributes={"a": 1, "b": 2, "c": 3}).end()
    tracer.start_span("huge", attributes={"n": 2**64 + 1}).end()
    lean = list(kept.get_finished_spans())
    mixed = [*lean, *spans]  # the fixture's are the SDK's spans
    in_c, in_python, refused = written_both_ways(mixed)

    assert in_c == in_python
    assert [span.name for span in refused] == [span.name for span in mixed if span.name != "common"]
    provider.shutdown()


def test_an_error_in_the_fallback_is_raised() -> None:
    kept = InMemorySpanExporter()
    provider = lean_spans(kept)
    provider.get_tracer("tienda").start_span("with a tuple", attributes={"t": (1,)}).end()

    def fallback(_span: ReadableSpan) -> bytes:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        c_encode_spans(kept.get_finished_spans(), LeanSpan, fallback)
    with pytest.raises(TypeError, match="bytes"):
        c_encode_spans(kept.get_finished_spans(), LeanSpan, lambda _span: "text")
    provider.shutdown()


def test_random_spans_are_written_by_c_as_by_python() -> None:
    """Two thousand spans of random names, kinds, statuses, parents and plain attributes
    (strings of every width of UTF-8, ints across the int64 range and beyond, floats,
    booleans), with a fixed seed: C writes each as Python does, or hands it to Python."""
    chance = random.Random(20261207)
    kept = InMemorySpanExporter()
    provider = lean_spans(kept)
    tracer = provider.get_tracer("tienda")

    def text() -> str:
        alphabet = "aZ09 _-/.é€☕😀"
        return "".join(chance.choice(alphabet) for _ in range(chance.choice((0, 1, 5, 130))))

    def value() -> str | bool | int | float:
        return chance.choice(
            (
                text(),
                chance.random() < 0.5,
                chance.randint(-(2**63), 2**63 - 1),
                chance.randint(0, 300),
                chance.choice((2**64, -(2**64) - 1)),
                chance.uniform(-1e9, 1e9),
            )
        )

    parents = [None, remote_context(span_id=chance.getrandbits(64) or 1)]
    for number in range(2000):
        parent = chance.choice(parents)
        span = tracer.start_span(
            text() or "unnamed",
            context=trace.set_span_in_context(NonRecordingSpan(parent)) if parent else None,
            kind=chance.choice(list(trace.SpanKind)),
            attributes={f"key.{key}": value() for key in range(chance.randint(0, 6))},
        )
        if number % 3 == 0:
            span.set_status(Status(chance.choice(list(StatusCode)), text() or None))
        span.end()
        if number % 50 == 0:
            parents.append(span.get_span_context())
    spans = list(kept.get_finished_spans())
    in_c, in_python, refused = written_both_ways(spans)

    assert in_c == in_python
    beyond_64_bits = [
        span
        for span in spans
        if any(type(v) is int and not -(2**63) <= v < 2**63 for v in span.attributes.values())
    ]
    assert refused == beyond_64_bits
    provider.shutdown()
