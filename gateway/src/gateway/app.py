"""The Starlette application: routes from the contracts' http rules, plus a few by hand."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import grpc
import tienda_contracts
from google.protobuf.descriptor import ServiceDescriptor
from loguru import logger
from opentelemetry import trace
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketClose
from tienda_platform import telemetry
from tienda_platform.asyncapi import build_asyncapi
from tienda_platform.ids import new_id
from tienda_platform.metrics import metrics_enabled
from tienda_platform.proto_schemas import Comments

from gateway import __version__, composition, docs, tracing
from gateway.config import Settings
from gateway.endpoints import Readiness, RpcEndpoint, healthz, metrics_page
from gateway.errors import ApiError, internal_error
from gateway.middleware import ROUTE_SCOPE_KEY, RequestObservability
from gateway.openapi import build_document
from gateway.routing import Handler, Route, RouteTable
from gateway.rules import contract_services, http_bindings
from gateway.templates import parse_template
from gateway.transcoding import RequestBuilder
from gateway.upstreams import Upstreams


class Dispatcher:
    """ASGI app that finds the route of a request and answers errors in the REST shape."""

    def __init__(self, table: RouteTable) -> None:
        self.table = table

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await WebSocketClose()(scope, receive, send)  # no WebSocket routes
            return
        raw_path: bytes | None = scope.get("raw_path")
        path = raw_path.split(b"?", 1)[0].decode("latin-1") if raw_path else scope["path"]
        match = self.table.match(scope["method"], path)
        if match is None:
            response = ApiError(grpc.StatusCode.NOT_FOUND, "no route matches this path").response()
        elif match.route is None:
            allowed = ", ".join(sorted(match.allowed))
            response = ApiError(
                grpc.StatusCode.UNIMPLEMENTED,
                "method not allowed on this path",
                http_status=405,
                headers={"Allow": allowed},
            ).response()
        else:
            scope[ROUTE_SCOPE_KEY] = match.route.label
            span = trace.get_current_span()
            if span.is_recording():
                span.update_name(f"{scope['method']} {match.route.label}")
                span.set_attribute("http.route", match.route.label)
            response = await self._handle(
                match.route.handler, Request(scope, receive), match.params
            )
        await response(scope, receive, send)

    @staticmethod
    async def _handle(handler: Handler, request: Request, params: dict[str, str]) -> Response:
        try:
            return await handler(request, params)
        except ApiError as error:
            return error.response()
        except Exception:
            correlation_id = new_id()
            logger.opt(exception=True).error(
                "unhandled error answering {route}",
                route=request.scope.get(ROUTE_SCOPE_KEY),
                correlation_id=correlation_id,
            )
            return internal_error(correlation_id).response()


def build_routes(
    *, settings: Settings, upstreams: Upstreams, services: Sequence[ServiceDescriptor]
) -> RouteTable:
    """Every route: one per http rule of `services`, then the hand-written ones."""
    table = RouteTable()
    bindings = http_bindings(services)
    for binding in bindings:
        endpoint = RpcEndpoint(
            builder=RequestBuilder(binding),
            call=upstreams.unary(binding.service, binding.rpc.name),
            max_body_bytes=settings.gateway_max_body_bytes,
            read_timeout=settings.gateway_read_timeout_seconds,
        )
        table.add(Route(binding.http_method, binding.template, endpoint))
    details = composition.OrderDetails(upstreams)
    document = build_document(
        bindings,
        Comments(tienda_contracts.descriptor_set()),
        extra_paths=[(composition.PATH, "get", composition.describe)],
    )
    openapi_json = json.dumps(document, ensure_ascii=False).encode()
    asyncapi_json = json.dumps(build_asyncapi(__version__), ensure_ascii=False).encode()

    async def openapi(request: Request, params: dict[str, str]) -> Response:
        return Response(openapi_json, media_type="application/json")

    async def asyncapi(request: Request, params: dict[str, str]) -> Response:
        return Response(asyncapi_json, media_type="application/json")

    by_hand: list[tuple[str, str, Handler]] = [
        ("GET", composition.PATH, details),
        ("GET", "/healthz", healthz),
        ("GET", "/readyz", Readiness(upstreams)),
        *([("GET", "/metrics", metrics_page)] if metrics_enabled() else []),
        ("GET", "/openapi.json", openapi),
        ("GET", "/asyncapi.json", asyncapi),
        ("GET", docs.DOCS_PATH, docs.docs_page),
        ("GET", docs.ASSETS_PATH, docs.docs_asset),
    ]
    for method, path, handler in by_hand:
        table.add(Route(method, parse_template(path), handler))
    return table


# probes and scrapes are noise in Jaeger
UNTRACED_PATHS = ("/healthz", "/readyz", "/metrics")


def method_span_name(scope: Scope) -> tuple[str, dict[str, str]]:
    # The method only: the dispatcher renames the span after the route template, so span
    # names never carry ids.
    return str(scope.get("method", "HTTP")), {}


def _middleware() -> list[Middleware]:
    """Server spans (when tracing is on) around request metrics and the access log, so the
    log line carries the trace id; the gRPC channels propagate the trace upstream."""
    middleware = [Middleware(RequestObservability)]
    if not telemetry.tracing_configured():
        return middleware
    if tracing.covers_configuration():
        spans = Middleware(tracing.ServerSpans, excluded_paths=UNTRACED_PATHS)
    else:
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        spans = Middleware(
            OpenTelemetryMiddleware,
            default_span_details=method_span_name,
            exclude_spans=["receive", "send"],
            excluded_urls=",".join(UNTRACED_PATHS),
        )
    return [spans, *middleware]


def create_app(*, settings: Settings) -> Starlette:
    """The gateway app; its upstream channels open and close with the app's lifespan."""
    upstreams = Upstreams(
        targets=settings.upstream_targets(),
        timeout=settings.upstream_timeout_seconds,
        breaker_failures=settings.gateway_breaker_failures,
        breaker_reset_seconds=settings.gateway_breaker_reset_seconds,
    )
    table = build_routes(settings=settings, upstreams=upstreams, services=contract_services())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await upstreams.open()
        logger.info("gateway upstreams: {targets}", targets=settings.upstream_targets())
        try:
            yield
        finally:
            await upstreams.close()

    app = Starlette(middleware=_middleware(), lifespan=lifespan)
    # Every request goes to the dispatcher: Starlette's own router would try a regex first.
    app.router.default = Dispatcher(table)
    app.router.redirect_slashes = False
    app.state.routes = table
    app.state.upstreams = upstreams
    return app
