"""ServerCallSpans and ClientCallSpans record what the gRPC instrumentation's aio server and
client interceptors record.

Each scene is one call, from a real client to a real grpc.aio server on loopback, made once
with each interceptor (on the server, or on the client's channel), each with a tracer
provider of its own whose ids are counted from one. Their finished spans must agree in name, kind, ids, parent, attributes,
status and events (an exception's stack trace passes through different frames); so must
what the handler saw as its current span and baggage, and what the client received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.instrumentation.grpc._server import OpenTelemetryServerInterceptor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tienda_platform import grpc_spans, grpc_tracing, telemetry
from tienda_platform.grpc_spans import ClientCallSpans, ServerCallSpans
from tienda_platform.spans import LeanTracerProvider
from tienda_platform.testing import CountingIds, comparable_fields

pytestmark = pytest.mark.unit

SERVICE = "tienda.test.v1.TestService"
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@dataclass
class Seen:
    span_contexts: list[Any] = field(default_factory=list)
    baggage: list[Any] = field(default_factory=list)
    answer: Any = None


Handler = Callable[[bytes, Any], Any]


async def answer(request: bytes, context: Any) -> bytes:
    return b"answer:" + request


async def with_attributes(request: bytes, context: Any) -> bytes:
    trace.get_current_span().set_attribute("order.id", "0193a8f2")
    return request


def aborting(code: grpc.StatusCode, details: str) -> Handler:
    async def handler(request: bytes, context: Any) -> bytes:
        await context.abort(code, details)
        raise AssertionError("abort returned")

    return handler


def setting(code: grpc.StatusCode, details: str | None = None, first: str = "code") -> Handler:
    async def handler(request: bytes, context: Any) -> bytes:
        if first == "details" and details is not None:
            context.set_details(details)
        context.set_code(code)
        if first == "code" and details is not None:
            context.set_details(details)
        return b""

    return handler


def raising(error: Exception) -> Handler:
    async def handler(request: bytes, context: Any) -> bytes:
        raise error

    return handler


async def streaming(request: bytes, context: Any) -> Any:
    for part in (b"a", b"b"):
        yield part


@dataclass
class Scene:
    handler: Any = answer
    metadata: tuple[tuple[str, str], ...] = ()
    method: str = "Call"
    stream: bool = False


SCENES: dict[str, Scene] = {
    "a call answered": Scene(),
    "a call in a caller's trace, with trace state and baggage": Scene(
        metadata=(
            ("traceparent", TRACEPARENT),
            ("tracestate", "vendor=value"),
            ("baggage", "tenant=shop-1"),
            ("authorization", "Bearer not-a-token"),
        )
    ),
    "a malformed traceparent": Scene(metadata=(("traceparent", "00-zz-zz-01"),)),
    "attributes set by the handler": Scene(with_attributes),
    "an abort the caller caused": Scene(aborting(grpc.StatusCode.NOT_FOUND, "no such order")),
    "an abort of the server's": Scene(aborting(grpc.StatusCode.INTERNAL, "it broke")),
    "an abort without details": Scene(aborting(grpc.StatusCode.UNAVAILABLE, "")),
    "a code set": Scene(setting(grpc.StatusCode.FAILED_PRECONDITION)),
    "a server's code set": Scene(setting(grpc.StatusCode.DEADLINE_EXCEEDED)),
    "a code, then details": Scene(setting(grpc.StatusCode.INTERNAL, "bad")),
    "details, then a code": Scene(setting(grpc.StatusCode.UNKNOWN, "odd", first="details")),
    "OK set": Scene(setting(grpc.StatusCode.OK)),
    "an exception": Scene(raising(ValueError("boom"))),
    "a bare Exception": Scene(raising(Exception("bare"))),
    "a method the filter leaves out": Scene(method="Untraced"),
    "a stream": Scene(streaming, method="Stream", stream=True),
}


def play(scene: Scene, make_interceptor: Callable[[TracerProvider], Any]) -> Any:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(id_generator=CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen = Seen()
    # set when the handler is done: an abort sends the status before it raises, and the
    # server, stopped as soon as the client has its answer, would cancel what follows
    handled = asyncio.Event()

    def observed(handler: Any) -> Any:
        if scene.stream:

            async def stream(request: bytes, context: Any) -> Any:
                seen.span_contexts.append(trace.get_current_span().get_span_context())
                seen.baggage.append(dict(baggage.get_all()))
                async for part in handler(request, context):
                    yield part
                handled.set()

            return grpc.unary_stream_rpc_method_handler(stream)

        async def unary(request: bytes, context: Any) -> Any:
            seen.span_contexts.append(trace.get_current_span().get_span_context())
            seen.baggage.append(dict(baggage.get_all()))
            try:
                return await handler(request, context)
            finally:
                handled.set()

        return grpc.unary_unary_rpc_method_handler(unary)

    async def call() -> None:
        server = grpc.aio.server(interceptors=[make_interceptor(provider)])
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE, {scene.method: observed(scene.handler)}
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        try:
            path = f"/{SERVICE}/{scene.method}"
            if scene.stream:
                parts = channel.unary_stream(path)(b"question", metadata=scene.metadata)
                seen.answer = [part async for part in parts]
            else:
                seen.answer = await channel.unary_unary(path)(b"question", metadata=scene.metadata)
        except grpc.aio.AioRpcError as error:
            seen.answer = (error.code(), error.details())
        try:
            await asyncio.wait_for(handled.wait(), timeout=10)
        finally:
            await channel.close()
            await server.stop(None)

    asyncio.run(call())
    return [described(span) for span in exporter.get_finished_spans()], seen


def described(span: ReadableSpan) -> dict[str, Any]:
    for event in span.events:
        assert "exception.stacktrace" in (event.attributes or {})
    fields = comparable_fields(span)
    # the peer's port is the client's, which differs from one connection to the next
    assert fields["attributes"].pop("net.peer.port").isdigit()
    return fields


def untraced(details: grpc.HandlerCallDetails) -> bool:
    return not details.method.endswith("/Untraced")


def the_instrumentation(provider: TracerProvider) -> Any:
    return aio_server_interceptor(tracer_provider=provider, filter_=untraced)


def server_call_spans(provider: TracerProvider) -> Any:
    return ServerCallSpans(tracer_provider=provider, filter_=untraced)


@pytest.mark.parametrize("name", list(SCENES))
def test_a_call_gets_the_span_the_grpc_instrumentation_gives_it(name: str) -> None:
    scene = SCENES[name]
    expected_spans, expected_seen = play(scene, the_instrumentation)
    spans, seen = play(scene, server_call_spans)
    assert len(spans) == len(expected_spans)
    for got, expected in zip(spans, expected_spans, strict=True):
        for key, value in expected.items():
            assert (key, got[key]) == (key, value)
    assert seen == expected_seen


def test_the_spans_of_calls_are_what_the_conventions_say() -> None:
    # the comparison above would pass if both were wrong: some scenes, spelled out
    [called], seen = play(
        SCENES["a call in a caller's trace, with trace state and baggage"], server_call_spans
    )
    assert called["name"] == f"/{SERVICE}/Call"
    assert called["kind"] is SpanKind.SERVER
    assert format(called["context"].trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert format(called["parent"].span_id, "016x") == TRACEPARENT.split("-")[2]
    assert called["parent"].is_remote
    assert called["attributes"] == {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": "Call",
        "rpc.service": SERVICE,
        "rpc.user_agent": called["attributes"]["rpc.user_agent"],
        "net.peer.ip": "127.0.0.1",
        "net.peer.name": "localhost",
    }
    assert called["attributes"]["rpc.user_agent"].startswith("grpc-python-asyncio")
    assert called["status"] == (StatusCode.UNSET, None)
    assert seen.baggage == [{"tenant": "shop-1"}]
    assert seen.answer == b"answer:question"

    [aborted], seen = play(SCENES["an abort of the server's"], server_call_spans)
    assert aborted["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert aborted["status"] == (StatusCode.ERROR, "StatusCode.INTERNAL:it broke")
    assert seen.answer == (grpc.StatusCode.INTERNAL, "it broke")
    [refused], _ = play(SCENES["an abort the caller caused"], server_call_spans)
    assert refused["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert refused["status"][0] is StatusCode.UNSET
    [failed], _ = play(SCENES["an exception"], server_call_spans)
    assert [name for name, _ in failed["events"]] == ["exception", "exception"]
    assert play(SCENES["a method the filter leaves out"], server_call_spans)[0] == []


@pytest.mark.parametrize(
    "peer",
    [
        "ipv4:127.0.0.1:57284",
        "ipv6:%5B::1%5D:57284",
        "ipv4:10.2.1.1:57284,127.0.0.1:57284",
        "ipv6:%5B2001:db8::7%5D:443",
        "unix:/run/tienda/grpc.sock",
    ],
)
def test_a_peer_gets_the_attributes_the_instrumentation_gives_it(peer: str) -> None:
    class Context:
        def invocation_metadata(self) -> tuple[Any, ...]:
            return ()

        def peer(self) -> str:
            return peer

    class Details:
        method = f"/{SERVICE}/Call"

    recorded: dict[str, Any] = {}

    class Tracer:
        def start_as_current_span(self, **kwargs: Any) -> None:
            recorded.update(kwargs["attributes"])

    OpenTelemetryServerInterceptor(Tracer())._start_span(Details(), Context())
    expected = {key: value for key, value in recorded.items() if key.startswith("net.")}
    assert grpc_spans._peer_attributes(peer) == expected


def test_the_services_use_server_call_spans_within_the_kept_traces_layer() -> None:
    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    [layer] = grpc_tracing.server_interceptors()
    assert isinstance(layer, grpc_tracing.ServerSpansInKeptTraces)
    assert isinstance(layer._traced, ServerCallSpans)


# the client's side


@dataclass
class ClientScene:
    method: str = "Call"
    handler: Any = answer
    metadata: tuple[tuple[str, str], ...] = (("authorization", "Bearer not-a-token"),)
    in_span: bool = True
    with_baggage: bool = False
    timeout: float | None = None


async def never_answering(request: bytes, context: Any) -> bytes:
    await asyncio.Event().wait()
    raise AssertionError("answered")


CLIENT_SCENES: dict[str, ClientScene] = {
    "a call in a trace": ClientScene(),
    "a call outside any trace": ClientScene(in_span=False),
    "a call without metadata of its own": ClientScene(metadata=()),
    "a call carrying baggage": ClientScene(with_baggage=True),
    "a call refused": ClientScene(handler=aborting(grpc.StatusCode.NOT_FOUND, "no such order")),
    "a call that failed": ClientScene(handler=aborting(grpc.StatusCode.INTERNAL, "it broke")),
    "a method the server does not have": ClientScene(method="Missing"),
    "a call past its deadline": ClientScene(handler=never_answering, timeout=0.05),
}


def call_from_client(scene: ClientScene, make_interceptor: Callable[[TracerProvider], Any]) -> Any:
    exporter = InMemorySpanExporter()
    provider = LeanTracerProvider(id_generator=CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    received: list[dict[str, str]] = []

    async def handled(request: bytes, context: Any) -> Any:
        received.append(dict(context.invocation_metadata()))
        return await scene.handler(request, context)

    async def call() -> Any:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Call": grpc.unary_unary_rpc_method_handler(handled)}
                ),
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        channel = grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", interceptors=[make_interceptor(provider)]
        )
        try:
            return await channel.unary_unary(f"/{SERVICE}/{scene.method}")(
                b"question", metadata=scene.metadata, timeout=scene.timeout
            )
        except grpc.aio.AioRpcError as error:
            return (error.code(), error.details())
        finally:
            await channel.close()
            await server.stop(None)

    def run() -> Any:
        if scene.with_baggage:
            token = otel_context.attach(baggage.set_baggage("tenant", "shop-1"))
            try:
                return asyncio.run(call())
            finally:
                otel_context.detach(token)
        return asyncio.run(call())

    if scene.in_span:
        with provider.get_tracer("caller").start_as_current_span("caller"):
            answered = run()
    else:
        answered = run()
    spans = [comparable_fields(span) for span in exporter.get_finished_spans()]
    # what the server read: the caller's metadata and the trace (grpc adds a user agent)
    metadata = [
        {key: value for key, value in got.items() if key != "user-agent"} for got in received
    ]
    return spans, metadata, answered


def the_client_instrumentation(provider: TracerProvider) -> Any:
    return aio_client_interceptors(tracer_provider=provider)[0]


def client_call_spans(provider: TracerProvider) -> Any:
    return ClientCallSpans(tracer_provider=provider)


@pytest.mark.parametrize("name", list(CLIENT_SCENES))
def test_a_call_made_gets_the_span_the_grpc_instrumentation_gives_it(name: str) -> None:
    scene = CLIENT_SCENES[name]
    assert call_from_client(scene, client_call_spans) == call_from_client(
        scene, the_client_instrumentation
    )


def test_the_spans_of_calls_made_are_what_the_conventions_say() -> None:
    spans, [metadata], answered = call_from_client(
        CLIENT_SCENES["a call carrying baggage"], client_call_spans
    )
    called = next(span for span in spans if span["kind"] is SpanKind.CLIENT)
    assert called["name"] == f"/{SERVICE}/Call"
    assert called["attributes"] == {
        "rpc.system": "grpc",
        "rpc.grpc.status_code": 0,
        "rpc.method": "Call",
        "rpc.service": SERVICE,
    }
    assert called["status"] == (StatusCode.UNSET, None)
    trace_id, span_id = (
        format(called["context"].trace_id, "032x"),
        format(called["context"].span_id, "016x"),
    )
    assert metadata == {
        "authorization": "Bearer not-a-token",
        "traceparent": f"00-{trace_id}-{span_id}-01",
        "baggage": "tenant=shop-1",
    }
    assert answered == b"answer:question"

    spans, _, answered = call_from_client(CLIENT_SCENES["a call that failed"], client_call_spans)
    failed = next(span for span in spans if span["kind"] is SpanKind.CLIENT)
    assert failed["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.INTERNAL.value[0]
    assert failed["status"] == (StatusCode.ERROR, "it broke")
    assert answered == (grpc.StatusCode.INTERNAL, "it broke")


def test_the_services_use_client_call_spans_within_the_kept_traces_layer() -> None:
    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    layers = grpc_tracing.client_interceptors()
    unary = [layer for layer in layers if isinstance(layer, grpc_tracing.ClientSpansInKeptTraces)]
    assert len(unary) == 1
    assert isinstance(unary[0]._traced, ClientCallSpans)
