"""Per-call costs on every order's path, each against what it replaced: recording a span,
opening a current span's block, and a span in a trace that is not kept
(tienda_platform.spans against the SDK's tracer provider), the gateway's server span for a
request (gateway.tracing.ServerSpans against OpenTelemetry's ASGI middleware), a service's
server span for a gRPC call (tienda_platform.grpc_spans.ServerCallSpans against the gRPC
instrumentation's aio server interceptor), OTLP span encoding (tienda_platform.otlp against
the SDK's encoder) and access-token checks (a token already checked, from TokenVerifier's cache, against a full
check), each in this process; and the greenlet SQLAlchemy's asyncio layer runs each awaited
database call in, with tienda_platform.stackcache and without, each in a process of its own
(the cache, once installed, stays for the process)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gateway.app import UNTRACED_PATHS, method_span_name
from gateway.tracing import ServerSpans
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio, Sampler
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from starlette.types import Message, Receive, Scope, Send
from tienda_platform.grpc_spans import ServerCallSpans
from tienda_platform.otlp import SpanEncoder
from tienda_platform.spans import LeanTracerProvider
from tienda_platform.telemetry import QuietSampler, configured_sampler
from tienda_platform.testing import TokenMint

SPANS = 512  # one export batch
TOKENS = 500


def order_like_spans() -> list[ReadableSpan]:
    """A batch like an order's: statement spans under a handler span, the attributes of
    tienda's instrumentation (statements repeat, ids do not), recorded as the services
    record them."""
    kept = InMemorySpanExporter()
    provider = LeanTracerProvider(resource=Resource.create({"service.name": "order_service"}))
    provider.add_span_processor(SimpleSpanProcessor(kept))
    tracer = provider.get_tracer("tienda")
    statements = [
        "SELECT orders.id, orders.status FROM orders WHERE orders.id = ?",
        "INSERT INTO outbox_events (id, event_type, stream) VALUES (?, ?, ?)",
        "UPDATE order_sagas SET step=?, update_time=? WHERE order_sagas.order_id = ?",
    ]
    with tracer.start_as_current_span(
        "tienda.order.events handle order.created",
        kind=trace.SpanKind.CONSUMER,
        attributes={"messaging.system": "redis", "messaging.destination.name": "orders"},
    ):
        for number in range(SPANS - 1):
            tracer.start_span(
                statements[number % 3].split()[0] + " order.db",
                kind=trace.SpanKind.CLIENT,
                attributes={
                    "db.system": "sqlite",
                    "db.name": "data/order.db",
                    "db.statement": statements[number % 3],
                    "order.id": f"0193a8f2-{number:04d}",
                },
            ).end()
    provider.shutdown()
    return list(kept.get_finished_spans())


def _per_span_us(
    parent: str | SpanContext,
    one: Callable[[trace.Tracer], None],
    rounds: int,
    sampler: Callable[[], Sampler] = configured_sampler,
) -> tuple[float, float]:
    """Microseconds of CPU per call of one(tracer), under a parent span (a kept span of that
    name, or a span from another service with that context), with the services' sampler
    (every trace kept, unless `sampler` says otherwise): the SDK's TracerProvider, then
    LeanTracerProvider (the best of `rounds` rounds of SPANS calls each; the processor keeps
    nothing, so only the recording is measured)."""
    costs = []
    for provider_class in (TracerProvider, LeanTracerProvider):
        provider = provider_class(sampler=sampler())
        provider.add_span_processor(SpanProcessor())
        tracer = provider.get_tracer("tienda")
        best = float("inf")
        with (
            tracer.start_as_current_span(parent)
            if isinstance(parent, str)
            else trace.use_span(NonRecordingSpan(parent))
        ):
            for _ in range(rounds):
                started = time.process_time()
                for _ in range(SPANS):
                    one(tracer)
                best = min(best, time.process_time() - started)
        provider.shutdown()
        costs.append(best * 1e6 / SPANS)
    return costs[0], costs[1]


def span_recording_us(rounds: int = 30) -> tuple[float, float]:
    """To start and end one statement's span, as StatementTracer does (see _per_span_us)."""
    statement = "SELECT orders.id, orders.status FROM orders WHERE orders.id = ?"
    engine = {"db.system": "sqlite", "db.name": "data/order.db"}

    def one(tracer: trace.Tracer) -> None:
        tracer.start_span(
            "SELECT orders",
            kind=trace.SpanKind.CLIENT,
            attributes={**engine, "db.statement": statement},
        ).end()

    return _per_span_us("tienda.order.events handle order.created", one, rounds)


def current_span_us(rounds: int = 30) -> tuple[float, float]:
    """For a `with start_as_current_span(...)` block, as a saga step or an event's handler
    opens one (see _per_span_us)."""

    def one(tracer: trace.Tracer) -> None:
        with tracer.start_as_current_span("saga pay", attributes={"order.id": "0190"}):
            pass

    return _per_span_us("POST /v1/orders", one, rounds)


def unkept_span_us(rounds: int = 30) -> tuple[float, float]:
    """To start and end a gRPC call's client span in a trace that is not kept, under one
    trace in ten kept (parentbased_traceidratio 0.1, as production runs): the fate of most
    spans then (see _per_span_us)."""
    caller = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(0)
    )

    def one(tracer: trace.Tracer) -> None:
        tracer.start_span(
            "/product.v1.ProductService/ReserveStock",
            kind=trace.SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.method": "ReserveStock"},
        ).end()

    def one_in_ten() -> Sampler:
        return QuietSampler(ParentBasedTraceIdRatio(0.1), follows_kept_parents=True)

    return _per_span_us(caller, one, rounds, sampler=one_in_ten)


def server_span_us(requests: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """Microseconds of CPU per request for the gateway's server span, from the request's
    scope (an order placed, with the headers an HTTP client sends) to the span queued for
    export: OpenTelemetry's ASGI middleware with the options the gateway gave it, then
    ServerSpans (the best of `rounds` rounds of `requests` requests each, around an app that
    renames the span after its route and answers at once)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": "POST",
        "root_path": "",
        "path": "/v1/orders",
        "raw_path": b"/v1/orders",
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"accept", b"*/*"),
            (b"accept-encoding", b"gzip, deflate"),
            (b"connection", b"keep-alive"),
            (b"user-agent", b"python-httpx/0.28.1"),
            (b"authorization", b"Bearer " + b"x" * 300),
            (b"idempotency-key", b"0193a8f2-0000-7000-8000-000000000000"),
            (b"content-type", b"application/json"),
            (b"content-length", b"86"),
        ],
    }

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name("POST /v1/orders")
            span.set_attribute("http.route", "/v1/orders")
        await receive()
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        pass

    async def measure(middleware: Callable) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(requests):
                await middleware(dict(scope), receive, send)
            best = min(best, time.process_time() - started)
        return best * 1e6 / requests

    costs = []
    for wrap in (
        lambda provider: OpenTelemetryMiddleware(
            app,
            default_span_details=method_span_name,
            exclude_spans=["receive", "send"],
            excluded_urls=",".join(UNTRACED_PATHS),
            tracer_provider=provider,
        ),
        lambda provider: ServerSpans(app, excluded_paths=UNTRACED_PATHS, tracer_provider=provider),
    ):
        provider = LeanTracerProvider(sampler=configured_sampler())
        provider.add_span_processor(SpanProcessor())
        costs.append(asyncio.run(measure(wrap(provider))))
        provider.shutdown()
    return costs[0], costs[1]


class _Metadatum(NamedTuple):
    key: str
    value: str


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple[_Metadatum, ...]


class _ServicerContext:
    """What a handler's context gives the server span: the call's metadata (a caller's
    sampled trace), its peer and its status."""

    metadata = (
        _Metadatum("user-agent", "grpc-python-asyncio/1.70.0 grpc-c/45.0.0 (linux; chttp2)"),
        _Metadatum("authorization", "Bearer " + "x" * 300),
        _Metadatum("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    )

    def invocation_metadata(self) -> tuple[_Metadatum, ...]:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:127.0.0.1:51234"

    def code(self) -> None:
        return None

    def details(self) -> str:
        return ""


def grpc_server_span_us(calls: int = 2000, rounds: int = 5) -> tuple[float, float]:
    """Microseconds of CPU per unary call for a service's server span, from the call's
    details to the span queued for export, around a handler that answers at once: the gRPC
    instrumentation's aio server interceptor, then ServerCallSpans (the best of `rounds`
    rounds of `calls` calls each)."""
    details = _CallDetails(
        "/tienda.product.v1.ProductService/ReserveStock", _ServicerContext.metadata
    )

    async def answer(request: bytes, context: Any) -> bytes:
        return request

    handler = grpc.unary_unary_rpc_method_handler(answer)

    async def found(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    async def measure(interceptor: Any) -> float:
        best = float("inf")
        for _ in range(rounds):
            started = time.process_time()
            for _ in range(calls):
                traced = await interceptor.intercept_service(found, details)
                await traced.unary_unary(b"request", _ServicerContext())
            best = min(best, time.process_time() - started)
        return best * 1e6 / calls

    costs = []
    for make in (aio_server_interceptor, ServerCallSpans):
        provider = LeanTracerProvider(sampler=configured_sampler())
        provider.add_span_processor(SpanProcessor())
        costs.append(asyncio.run(measure(make(tracer_provider=provider))))
        provider.shutdown()
    return costs[0], costs[1]


def span_encoding_us(rounds: int = 20) -> tuple[float, float]:
    """Microseconds of CPU per span from spans to the request's bytes, as each exporter's
    stub sends them: the SDK's encoder and its protobuf message written out, then
    tienda_platform.otlp's, whose bytes are sent as they are."""
    spans = order_like_spans()
    encoder = SpanEncoder()

    def ours() -> None:
        encoder.request(spans)

    def sdk() -> None:
        encode_spans(spans).SerializeToString()

    costs = []
    for encode in (sdk, ours):
        encode()  # caches and first-call costs out of the measurement
        started = time.process_time()
        for _ in range(rounds):
            encode()
        costs.append((time.process_time() - started) * 1e6 / rounds / len(spans))
    return costs[0], costs[1]


def token_check_us() -> tuple[float, float]:
    """Microseconds of CPU per check: a token seen for the first time (the full check), then
    one token checked again and again (TokenVerifier's cache)."""
    mint = TokenMint(Ed25519PrivateKey.generate(), kid="bench")
    tokens = [mint.token(f"user-{number}") for number in range(TOKENS)]

    async def measure() -> tuple[float, float]:
        verifier = mint.verifier()
        await verifier.verify(mint.token("warm-up"))  # the JWKS fetched
        started = time.process_time()
        for token in tokens:
            await verifier.verify(token)
        full = (time.process_time() - started) * 1e6 / len(tokens)
        started = time.process_time()
        for _ in range(len(tokens)):
            await verifier.verify(tokens[0])
        cached = (time.process_time() - started) * 1e6 / len(tokens)
        return full, cached

    return asyncio.run(measure())


GREENLETS = 20_000


def greenlet_spawn_us(*, cached: bool) -> float:
    """Microseconds of CPU per greenlet_spawn (the call SQLAlchemy's asyncio layer makes for
    every awaited execute, flush, commit or close) of a function that runs a little Python,
    in a new process with the frame-stack cache installed or not; the best of five rounds."""
    result = subprocess.run(
        [sys.executable, "-m", "tienda_devstack.bench_hot_paths", "cached" if cached else "plain"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(result.stdout)


def _greenlet_spawns(cached: bool) -> float:
    from sqlalchemy.util.concurrency import greenlet_spawn
    from tienda_platform import stackcache

    if cached:
        stackcache.install()

    def work() -> int:
        return sum(range(5))

    async def measure() -> float:
        for _ in range(GREENLETS // 10):
            await greenlet_spawn(work)
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(GREENLETS):
                await greenlet_spawn(work)
            best = min(best, (time.process_time() - started) * 1e6 / GREENLETS)
        return best

    return asyncio.run(measure())


if __name__ == "__main__":
    print(_greenlet_spawns(sys.argv[1] == "cached"))
