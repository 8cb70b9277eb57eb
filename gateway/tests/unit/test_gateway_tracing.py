"""ServerSpans records what OpenTelemetry's ASGI middleware records with the gateway's options.

Each scene is one request (a scope, and what the app does with it) played through both
middlewares, each with a tracer provider of its own whose ids are counted from one, so the
two runs give the same trace and span ids. Their finished spans must agree in name, kind,
ids, parent, attributes, status and events (an exception's stack trace passes through
different frames); so must what the app saw as its current span and baggage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from starlette.middleware import Middleware
from tienda_platform.testing import CountingIds, comparable_fields

from gateway import app as gateway_app
from gateway import tracing

pytestmark = pytest.mark.unit

EXCLUDED = gateway_app.UNTRACED_PATHS
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

App = Callable[[Any, Any, Any], Awaitable[None]]


def scope(path: str = "/v1/orders", method: str = "POST", **changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 51234),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"accept", b"*/*"),
            (b"user-agent", b"python-httpx/0.28.1"),
            (b"authorization", b"Bearer not-a-token"),
            (b"content-type", b"application/json"),
        ],
    }
    base.update(changes)
    return base


def headers(*extra: tuple[bytes, bytes], without: bytes | None = None) -> list[Any]:
    kept = [header for header in scope()["headers"] if header[0] != without]
    return [*kept, *extra]


@dataclass
class Seen:
    """What the app saw, and how the request ended."""

    span_contexts: list[Any] = field(default_factory=list)
    recording: list[bool] = field(default_factory=list)  # after each message sent
    baggage: list[Any] = field(default_factory=list)
    sent: list[Any] = field(default_factory=list)
    raised: str | None = None


def responding(
    status: int | str = 200,
    *,
    route: str | None = None,
    trailers: bool = False,
    more_body: bool = False,
    raise_before: bool = False,
    raise_after: bool = False,
) -> Callable[[Seen], App]:
    """An app that answers as the gateway's dispatcher does (renaming the span after the
    route it found), with the changes a scene asks for."""

    def make(seen: Seen) -> App:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            span = trace.get_current_span()
            seen.span_contexts.append(span.get_span_context())
            seen.baggage.append(baggage.get_all())
            if route and span.is_recording():
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.route", route)
            if raise_before:
                raise RuntimeError("the handler failed")
            await receive()
            messages: list[dict[str, Any]] = [
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-length", b"2")],
                    "trailers": trailers,
                }
            ]
            if more_body:
                messages.append({"type": "http.response.body", "body": b"{", "more_body": True})
            messages.append({"type": "http.response.body", "body": b"}"})
            if trailers:
                messages.append({"type": "http.response.trailers", "headers": []})
            for message in messages:
                await send(message)
                seen.recording.append(span.is_recording())
            seen.span_contexts.append(trace.get_current_span().get_span_context())
            if raise_after:
                raise RuntimeError("failed after answering")

        return app

    return make


@dataclass
class Scene:
    scope: dict[str, Any]
    app: Callable[[Seen], App] = field(default_factory=responding)
    in_span: bool = False


SCENES: dict[str, Scene] = {
    "an order placed": Scene(scope(), responding(201, route="/v1/orders")),
    "a listing with a query, on port 80, without a Host header, over HTTP/2": Scene(
        scope(
            "/v1/products",
            "GET",
            server=("10.0.0.5", 80),
            http_version="2",
            query_string=b"page_size=2&page_token=a%2Fb&name=caf%C3%A9",
            headers=headers(without=b"host"),
        ),
        responding(route="/v1/products"),
    ),
    "signed query parameters": Scene(
        scope("/v1/products", "GET", query_string=b"sig=secret&Signature=x&keep=1")
    ),
    "credentials in the Host header": Scene(
        scope(headers=headers((b"host", b"user:pw@shop.example:8443"), without=b"host"))
    ),
    "two Host headers": Scene(
        scope(headers=headers((b"host", b"second.example"), (b"Host", b"third.example")))
    ),
    "a decoded question mark in the path": Scene(scope("/v1/products/a?sig=1", "GET")),
    "a bot": Scene(
        scope(headers=headers((b"user-agent", b"Googlebot/2.1"), without=b"user-agent"))
    ),
    "a synthetic test": Scene(
        scope(headers=headers((b"user-agent", b"AlwaysOn probe"), without=b"user-agent"))
    ),
    "an empty user agent": Scene(
        scope(headers=headers((b"user-agent", b""), without=b"user-agent"))
    ),
    "a header that is not UTF-8": Scene(
        scope(headers=headers((b"user-agent", b"agent \xe9 \\x41"), without=b"user-agent"))
    ),
    "an unknown method": Scene(scope(method="BREW"), responding(405)),
    "a lowercase method": Scene(scope(method="get")),
    "no client, no server": Scene(scope(client=None, server=None)),
    "a unix socket server": Scene(scope(server=("/run/gateway.sock", None))),
    "a caller's trace, trace state and baggage": Scene(
        scope(
            headers=headers(
                (b"traceparent", TRACEPARENT.encode()),
                (b"tracestate", b"vendor=value"),
                (b"baggage", b"tenant=shop-1"),
            )
        )
    ),
    "a malformed traceparent": Scene(scope(headers=headers((b"traceparent", b"00-zz-zz-01")))),
    "an error answered": Scene(scope(), responding(503, route="/v1/orders")),
    "a client error answered": Scene(scope(), responding(404)),
    "a status out of range": Scene(scope(), responding(99)),
    "a negative status": Scene(scope(), responding(-1)),
    "a status that is not a number": Scene(scope(), responding("teapot")),
    "an exception before answering": Scene(scope(), responding(raise_before=True)),
    "an exception after answering": Scene(scope(), responding(raise_after=True)),
    "a body in two parts": Scene(scope(), responding(more_body=True)),
    "trailers": Scene(scope(), responding(trailers=True)),
    "inside a span already": Scene(scope(), responding(route="/v1/orders"), in_span=True),
    "a probe": Scene(scope("/healthz", "GET")),
    "a scrape": Scene(scope("/metrics", "GET")),
    "the lifespan": Scene({"type": "lifespan", "asgi": {"version": "3.0"}}),
}


def play(scene: Scene, make_middleware: Callable[[App, TracerProvider], App]) -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(id_generator=CountingIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    seen = Seen()
    middleware = make_middleware(scene.app(seen), provider)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        seen.sent.append(message)

    async def request() -> None:
        try:
            await middleware(dict(scene.scope), receive, send)
        except RuntimeError as error:
            seen.raised = str(error)

    if scene.in_span:
        with provider.get_tracer("outer").start_as_current_span("outer"):
            asyncio.run(request())
    else:
        asyncio.run(request())
    return [described(span) for span in exporter.get_finished_spans()], seen


def described(span: ReadableSpan) -> dict[str, Any]:
    for event in span.events:  # each exception's, raised by the app
        assert "RuntimeError" in str((event.attributes or {}).get("exception.stacktrace", ""))
    return comparable_fields(span)


def the_sdk_middleware(app: App, provider: TracerProvider) -> App:
    # the options gateway.app gave it
    return OpenTelemetryMiddleware(
        app,
        default_span_details=gateway_app.method_span_name,
        exclude_spans=["receive", "send"],
        excluded_urls=",".join(EXCLUDED),
        tracer_provider=provider,
    )


def server_spans(app: App, provider: TracerProvider) -> App:
    return tracing.ServerSpans(app, excluded_paths=EXCLUDED, tracer_provider=provider)


@pytest.mark.parametrize("name", list(SCENES))
def test_a_request_gets_the_span_the_asgi_instrumentation_gives_it(name: str) -> None:
    scene = SCENES[name]
    expected_spans, expected_seen = play(scene, the_sdk_middleware)
    spans, seen = play(scene, server_spans)
    assert spans == expected_spans
    assert seen == expected_seen


def test_the_spans_of_an_order_and_of_a_caller_s_trace_are_what_the_conventions_say() -> None:
    # the comparison above would pass if both were wrong: two scenes, spelled out
    [order], _ = play(SCENES["an order placed"], server_spans)
    assert order["name"] == "POST /v1/orders"
    assert order["kind"] is SpanKind.SERVER
    assert order["parent"] is None
    assert order["attributes"] == {
        "http.scheme": "http",
        "http.host": "127.0.0.1:8080",
        "net.host.port": 8080,
        "http.flavor": "1.1",
        "http.target": "/v1/orders",
        "http.url": "http://127.0.0.1:8080/v1/orders",
        "http.method": "POST",
        "http.server_name": "127.0.0.1:8080",
        "http.user_agent": "python-httpx/0.28.1",
        "net.peer.ip": "127.0.0.1",
        "net.peer.port": 51234,
        "http.route": "/v1/orders",
        "http.status_code": 201,
    }
    assert order["status"] == (StatusCode.UNSET, None)
    _, in_parts = play(SCENES["a body in two parts"], server_spans)
    assert in_parts.recording == [True, True, False]  # ended by the last part
    _, with_trailers = play(SCENES["trailers"], server_spans)
    assert with_trailers.recording == [True, False, False]  # by the body, trailers or not

    [called], seen = play(SCENES["a caller's trace, trace state and baggage"], server_spans)
    assert format(called["context"].trace_id, "032x") == TRACEPARENT.split("-")[1]
    assert format(called["parent"].span_id, "016x") == TRACEPARENT.split("-")[2]
    assert called["parent"].is_remote
    assert [dict(found) for found in seen.baggage] == [{"tenant": "shop-1"}]

    [failed], _ = play(SCENES["an error answered"], server_spans)
    assert failed["status"][0] is StatusCode.ERROR
    [signed], _ = play(SCENES["signed query parameters"], server_spans)
    assert "secret" not in signed["attributes"]["http.url"]
    [inner, _outer], _ = play(SCENES["inside a span already"], server_spans)
    assert inner["kind"] is SpanKind.INTERNAL
    assert play(SCENES["a probe"], server_spans)[0] == []


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("OTEL_SEMCONV_STABILITY_OPT_IN", "http"),
        ("OTEL_SEMCONV_STABILITY_OPT_IN", "database, http/dup"),
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "x-request-id"),
        ("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", "content-type"),
    ],
)
def test_what_server_spans_does_not_write_hands_the_requests_to_the_asgi_instrumentation(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    def first_middleware() -> Middleware:
        monkeypatch.setattr(gateway_app.telemetry, "tracing_configured", lambda: True)
        return gateway_app._middleware()[0]

    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    for name in tracing._CAPTURED_HEADERS:
        monkeypatch.delenv(name, raising=False)
    assert tracing.covers_configuration()
    assert first_middleware().cls is tracing.ServerSpans

    monkeypatch.setenv(variable, value)
    assert not tracing.covers_configuration()
    assert first_middleware().cls is OpenTelemetryMiddleware
