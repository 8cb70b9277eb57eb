"""Per-request metrics and one JSON access-log line per request (pure ASGI, no body buffering).

Only the method, the route template, the status and the duration are logged: never headers
(Authorization), query strings or bodies.
"""

from __future__ import annotations

import time

from loguru import logger
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tienda_platform.metrics import metrics_enabled
from tienda_platform.telemetry import exemplar

from gateway import metrics

ROUTE_SCOPE_KEY = "gateway.route"


class RequestObservability:
    """Counts, times and logs every HTTP request by its route template."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.metrics = metrics_enabled()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_code = 500

        async def send_and_note_status(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            elapsed = time.perf_counter() - started
            method = metrics.bounded_method(scope["method"])
            route = scope.get(ROUTE_SCOPE_KEY, metrics.UNMATCHED_ROUTE)
            if self.metrics:
                metrics.http_requests(method, route, status_code).inc()
                metrics.http_seconds(method, route).observe(elapsed, exemplar=exemplar())
            logger.info(
                "{http_method} {route} {status_code}",
                http_method=method,
                route=route,
                status_code=status_code,
                duration_ms=round(elapsed * 1000, 3),
            )
