"""gRPC tracing between a real grpc.aio client and server with tienda's interceptors: a call in
a trace that is kept gets the instrumentation's client and server spans; a call in a trace that
is not kept carries that trace on, with no client span, and is handled under an unrecorded span
of the server's; a call outside any trace is left to the sampler, as before."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from tienda_platform import grpc_client, grpc_tracing, telemetry

pytestmark = pytest.mark.integration

SERVICE = "tienda.test.Echo"
UNARY = f"/{SERVICE}/Unary"
STREAM = f"/{SERVICE}/Stream"


@dataclass
class Seen:
    """What a handler saw: the span it ran under, and the call's metadata."""

    span: SpanContext
    metadata: dict[str, str]


def _echo(seen: list[Seen]) -> grpc.GenericRpcHandler:
    def record(context: grpc.aio.ServicerContext) -> None:
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        seen.append(Seen(trace.get_current_span().get_span_context(), metadata))

    async def unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        record(context)
        return request

    async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        record(context)
        yield request

    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )


@pytest.fixture
async def server(recorded_spans: InMemorySpanExporter) -> AsyncIterator[tuple[str, list[Seen]]]:
    """A server with tienda's interceptors: its target, and what its handlers saw."""
    seen: list[Seen] = []
    server = grpc.aio.server(interceptors=grpc_tracing.server_interceptors())
    server.add_generic_rpc_handlers((_echo(seen),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}", seen
    finally:
        await server.stop(None)


@pytest.fixture
async def channel(
    server: tuple[str, list[Seen]],
) -> AsyncIterator[tuple[grpc.aio.Channel, list[Seen]]]:
    """A channel to that server as the services open them (with tienda's interceptors)."""
    target, seen = server
    async with grpc_client.create_channel(target) as channel:
        yield channel, seen


def _not_kept() -> NonRecordingSpan:
    """A span of a trace that the sampler did not keep (as a caller's would arrive)."""
    return NonRecordingSpan(
        SpanContext(
            trace_id=0x5CE0E9A56015FEC5AADFA328AE398115,
            span_id=0xAB54A98CEB1F0AD2,
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.DEFAULT),
        )
    )


async def test_a_call_in_a_kept_trace_gets_the_client_and_server_spans(
    channel: tuple[grpc.aio.Channel, list[Seen]], recorded_spans: InMemorySpanExporter
) -> None:
    channel_, seen = channel
    with telemetry.tracer.start_as_current_span("request") as request:
        assert await channel_.unary_unary(UNARY)(b"hello") == b"hello"
    by_kind = {
        span.kind: span for span in recorded_spans.get_finished_spans() if span.name == UNARY
    }
    client, server = by_kind[SpanKind.CLIENT], by_kind[SpanKind.SERVER]
    caller = request.get_span_context()
    assert client.parent is not None and client.parent.span_id == caller.span_id
    assert server.parent is not None and server.parent.span_id == client.context.span_id
    assert client.context.trace_id == server.context.trace_id == caller.trace_id
    assert server.attributes is not None and server.attributes["rpc.method"] == "Unary"
    (handled,) = seen
    assert handled.span == server.context  # the handler ran under the server's span


async def test_a_call_in_a_trace_not_kept_carries_it_on_with_no_client_span(
    channel: tuple[grpc.aio.Channel, list[Seen]], recorded_spans: InMemorySpanExporter
) -> None:
    channel_, seen = channel
    caller = _not_kept()
    with trace.use_span(caller):
        assert await channel_.unary_unary(UNARY)(b"hello") == b"hello"
    (handled,) = seen
    context = caller.get_span_context()
    # the caller's own span is the parent the server is told of: no client span in between
    assert (
        handled.metadata["traceparent"] == f"00-{context.trace_id:032x}-{context.span_id:016x}-00"
    )
    # handled in the caller's trace, under a span of the server's own, not recorded
    assert handled.span.trace_id == context.trace_id
    assert handled.span.span_id not in (0, context.span_id)
    assert not handled.span.trace_flags.sampled
    assert recorded_spans.get_finished_spans() == ()


async def test_a_stream_in_a_trace_not_kept_runs_in_that_trace(
    channel: tuple[grpc.aio.Channel, list[Seen]], recorded_spans: InMemorySpanExporter
) -> None:
    channel_, seen = channel
    caller = _not_kept()
    with trace.use_span(caller):
        assert [reply async for reply in channel_.unary_stream(STREAM)(b"hello")] == [b"hello"]
    (handled,) = seen
    assert handled.span.trace_id == caller.get_span_context().trace_id
    assert not handled.span.trace_flags.sampled
    assert recorded_spans.get_finished_spans() == ()


async def test_a_call_outside_any_trace_records_no_span_on_either_side(
    channel: tuple[grpc.aio.Channel, list[Seen]], recorded_spans: InMemorySpanExporter
) -> None:
    """A background job's call: QuietSampler drops its client span, and the server, told of
    that span's trace, keeps nothing of it either (it would otherwise open a trace of its
    own for every such call)."""
    channel_, seen = channel
    assert not trace.get_current_span().get_span_context().is_valid
    assert await channel_.unary_unary(UNARY)(b"hello") == b"hello"
    (handled,) = seen
    assert handled.span.is_valid and not handled.span.trace_flags.sampled
    assert recorded_spans.get_finished_spans() == ()


@pytest.mark.parametrize(
    "traceparent",
    [
        "00-5ce0e9a56015fec5aadfa328ae398115-ab54a98ceb1f0ad2-zz",  # flags not hex
        "00-5ce0e9a56015fec5aadfa328ae398115",  # cut short
        "00-00000000000000000000000000000000-ab54a98ceb1f0ad2-00",  # an invalid trace id
    ],
)
async def test_a_call_with_a_malformed_traceparent_is_a_trace_of_its_own(
    server: tuple[str, list[Seen]], recorded_spans: InMemorySpanExporter, traceparent: str
) -> None:
    """From a client other than tienda's own (grpcurl, say): the context is ignored, and the
    sampler decides on a new trace, which it keeps."""
    target, seen = server
    async with grpc.aio.insecure_channel(target) as plain:
        call = plain.unary_unary(UNARY)(b"hello", metadata=(("traceparent", traceparent),))
        assert await call == b"hello"
    (handled,) = seen
    (span,) = recorded_spans.get_finished_spans()
    assert span.kind == SpanKind.SERVER and span.parent is None
    assert handled.span == span.context
