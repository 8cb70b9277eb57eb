"""A server span for every HTTP request: the span OpenTelemetry's ASGI middleware makes.

`ServerSpans` records, for each request, what `opentelemetry.instrumentation.asgi`'s
OpenTelemetryMiddleware records with the gateway's options (no `receive`/`send` child spans)
under the default HTTP semantic conventions: the same name, kind, parent, attributes
(http.scheme, http.host, net.host.port, http.flavor, http.target, http.url with credentials
and signed query parameters redacted, http.method, http.server_name, http.user_agent and
user_agent.synthetic.type, net.peer.ip, net.peer.port, then http.status_code), the same
status (ERROR on a 5xx, or on an exception, which it records) and the same end, once the
last part of the body is sent. The trace context is read from the request's headers by the
configured propagators; a request that arrives inside a span (an app mounted in another)
gets an INTERNAL child of it, as there.

What it leaves out is what the gateway does not use, and it cost a hundred microseconds a
request, as much as the rest of the gateway's tracing: that middleware reads each header it
needs by decoding every header of the request (nine passes a request), sets each attribute
twice, and records OpenTelemetry metrics (the gateway's RED metrics are Prometheus's, in
RequestObservability; no OpenTelemetry meter provider is installed). `covers_configuration`
says when the options of that middleware that ServerSpans does not have are asked for by the
environment (the new or duplicated HTTP conventions, captured request or response headers);
the gateway then uses OpenTelemetryMiddleware itself. gateway/tests/unit/test_gateway_tracing.py
plays the same requests through both and compares the spans.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from contextlib import suppress
from typing import Any
from urllib.parse import unquote

from opentelemetry import context, propagate, trace
from opentelemetry.instrumentation.utils import http_status_to_status_code
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.http import (
    detect_synthetic_user_agent,
    redact_url,
    sanitize_method,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import __version__

# Environment variables that ask OpenTelemetryMiddleware for what ServerSpans does not do.
_NEW_CONVENTIONS = "OTEL_SEMCONV_STABILITY_OPT_IN"
_CAPTURED_HEADERS = (
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST",
    "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE",
)


def covers_configuration() -> bool:
    """False when the environment asks the ASGI instrumentation for the new (or duplicated)
    HTTP semantic conventions or for captured headers, which ServerSpans does not write."""
    opted_in = {part.strip() for part in os.environ.get(_NEW_CONVENTIONS, "").split(",")}
    if opted_in & {"http", "http/dup"}:
        return False
    return not any(os.environ.get(name) for name in _CAPTURED_HEADERS)


class _HeaderGetter(Getter[dict[str, list[str]]]):
    """The propagators' view of the request's headers, decoded once."""

    def get(self, carrier: dict[str, list[str]], key: str) -> list[str] | None:
        return carrier.get(key.lower())

    def keys(self, carrier: dict[str, list[str]]) -> list[str]:
        return list(carrier)


_getter = _HeaderGetter()


def _decoded(value: bytes) -> str:
    # as the ASGI instrumentation decodes a header's name or value
    try:
        return value.decode("utf-8")
    except ValueError:
        return value.decode("unicode_escape")


def _headers(scope: Scope) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for raw_name, raw_value in scope.get("headers") or ():
        try:
            name = raw_name.decode("utf-8").lower()
            value = raw_value.decode("utf-8")
        except ValueError:
            name = _decoded(raw_name).lower()
            value = _decoded(raw_value)
        values = headers.get(name)
        if values is None:
            headers[name] = [value]
        else:
            values.append(value)
    return headers


def request_attributes(scope: Scope, headers: dict[str, list[str]]) -> dict[str, Any]:
    """The attributes the ASGI instrumentation's collect_request_attributes gives a request
    under the default HTTP semantic conventions, in its order."""
    server = scope.get("server") or ["0.0.0.0", 80]
    port = server[1]
    server_host = server[0] + (":" + str(port) if str(port) != "80" else "")
    hosts = headers.get("host")
    url_host = hosts[0] if hosts else server_host
    path = scope.get("path", "")
    url = scope.get("scheme", "http") + "://" + url_host + path
    query = scope.get("query_string")
    if query:
        if isinstance(query, bytes):
            query = query.decode("utf8")
        url += "?" + unquote(query)

    attributes: dict[str, Any] = {}
    scheme = scope.get("scheme")
    if scheme:
        attributes["http.scheme"] = scheme
    if server_host:
        attributes["http.host"] = server_host
    if port:
        with suppress(ValueError, TypeError):
            attributes["net.host.port"] = int(port)
    flavor = scope.get("http_version")
    if flavor:
        attributes["http.flavor"] = flavor
    if path:
        attributes["http.target"] = path
    if url:
        # only credentials or a query (a "?" in the path counts) may be redacted
        redacted = redact_url(url) if "?" in url or "@" in url else url
        if redacted:
            attributes["http.url"] = redacted
    method = scope.get("method", "")
    if method:
        sanitized = sanitize_method(method).strip()
        if sanitized:
            attributes["http.method"] = sanitized
    if hosts:
        attributes["http.server_name"] = ",".join(hosts)
    user_agents = headers.get("user-agent")
    if user_agents:
        user_agent = user_agents[0]
        if user_agent:
            attributes["http.user_agent"] = user_agent
        synthetic = detect_synthetic_user_agent(user_agent)
        if synthetic:
            attributes["user_agent.synthetic.type"] = synthetic
    client = scope.get("client")
    if client is not None:
        if client[0]:
            attributes["net.peer.ip"] = client[0]
        if client[1]:
            with suppress(ValueError, TypeError):
                attributes["net.peer.port"] = int(client[1])
    return attributes


def _set_status(span: trace.Span, status: Any) -> None:
    try:
        code = int(status)
    except ValueError:
        code = -1  # as the instrumentation reads a status that is not a number
    if code < 0:
        span.set_status(Status(StatusCode.ERROR, "Non-integer HTTP status: " + str(status)))
        return
    span.set_attribute("http.status_code", code)
    span.set_status(Status(http_status_to_status_code(code, server_span=True)))


class ServerSpans:
    """ASGI middleware: one SERVER span per HTTP request, named by its method (the app may
    rename it after its route), but for the paths in `excluded_paths` (probes, scrapes)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        excluded_paths: Collection[str] = (),
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.app = app
        self.excluded_paths = frozenset(excluded_paths)
        self.tracer = trace.get_tracer(__name__, __version__, tracer_provider)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if trace.get_current_span() is trace.INVALID_SPAN:
            parent = propagate.extract(headers, getter=_getter)
            kind = SpanKind.SERVER
        else:
            parent = context.get_current()
            kind = SpanKind.INTERNAL
        span = self.tracer.start_span(
            str(scope.get("method", "HTTP")),
            context=parent,
            kind=kind,
            attributes=request_attributes(scope, headers),
        )
        token = context.attach(trace.set_span_in_context(span, parent))

        async def send_and_end(message: Message) -> None:
            message_type = message["type"]
            if message_type == "http.response.start":
                status = message["status"]
                if status and span.is_recording():
                    _set_status(span, status)
            await send(message)
            if message_type == "http.response.body" and not message.get("more_body", False):
                span.end()  # trailers, if any, come after: as there, without a send span

        try:
            await self.app(scope, receive, send_and_end)
        except Exception as error:
            if span.is_recording():
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            raise
        finally:
            context.detach(token)
            if span.is_recording():
                span.end()
