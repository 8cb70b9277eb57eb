"""A request handled in a sampled trace leaves its trace id as the exemplar of its duration."""

from __future__ import annotations

from typing import Any

import pytest
from gateway.middleware import ROUTE_SCOPE_KEY, RequestObservability
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

pytestmark = pytest.mark.unit

ROUTE = "/v1/exemplar-test/{id}"


async def answer(scope: Any, receive: Any, send: Any) -> None:
    scope[ROUTE_SCOPE_KEY] = ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def request(app: RequestObservability) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        pass

    await app({"type": "http", "method": "GET", "path": "/v1/exemplar-test/1"}, receive, send)


def exemplars() -> str:
    return "\n".join(
        line
        for line in openmetrics(REGISTRY).decode().splitlines()
        if line.startswith("http_server_request_duration_seconds_bucket{")
        and f'route="{ROUTE}"' in line
        and "# {trace_id=" in line
    )


async def test_the_duration_of_a_traced_request_carries_its_trace_id() -> None:
    app = RequestObservability(answer)
    with TracerProvider().get_tracer("t").start_as_current_span("GET") as span:
        await request(app)
    assert format(span.get_span_context().trace_id, "032x") in exemplars()

    dropped = TracerProvider(sampler=ParentBasedTraceIdRatio(0.0))
    with dropped.get_tracer("t").start_as_current_span("GET") as other:
        await request(app)
    assert format(other.get_span_context().trace_id, "032x") not in exemplars()
