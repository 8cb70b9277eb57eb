"""Health, readiness, metrics, the OpenAPI document, the docs UI and the access log."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from grpc_health.v1 import health_pb2

from .upstream_fakes import MUG_ID, Upstream

pytestmark = pytest.mark.integration


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_ready_when_every_upstream_serves(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["upstreams"] == {
        "auth.v1.AuthService": "SERVING",
        "order.v1.OrderService": "SERVING",
        "product.v1.ProductService": "SERVING",
    }


async def test_not_ready_names_the_upstream_that_is_not(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    await upstreams["order"].health.set(
        "order.v1.OrderService", health_pb2.HealthCheckResponse.NOT_SERVING
    )
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["not_serving"] == ["order.v1.OrderService"]
    await upstreams["product"].server.stop(None)
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["not_serving"] == ["order.v1.OrderService", "product.v1.ProductService"]
    assert response.json()["upstreams"]["product.v1.ProductService"] == "UNAVAILABLE"


async def test_metrics_by_route_template_and_rpc(client: httpx.AsyncClient) -> None:
    await client.get(f"/v1/products/{MUG_ID}")
    await client.get("/v1/nothing")
    text = (await client.get("/metrics")).text
    assert (
        'http_server_requests_total{method="GET",route="/v1/products/{id}",status_code="200"}'
        in text
    )
    assert 'http_server_requests_total{method="GET",route="unmatched",status_code="404"}' in text
    assert (
        'http_server_request_duration_seconds_bucket{le="0.005",method="GET",route="/v1/products/{id}"}'
        in text
    )
    assert (
        'grpc_client_handled_total{grpc_code="OK",grpc_method="GetProduct",'
        'grpc_service="product.v1.ProductService"}' in text
    )
    assert "grpc_client_handling_seconds_count" in text
    assert MUG_ID not in text


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"] == "3.1.0"
    assert document["paths"]["/v1/products/{id}"]["get"]["operationId"] == "GetProduct"


async def test_docs_ui_and_its_assets_are_served_locally(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in page.text and "/docs/swagger-ui-bundle.js" in page.text
    assert "cdn" not in page.text.lower() and "https://" not in page.text
    script = await client.get("/docs/swagger-ui-bundle.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert b"SwaggerUIBundle" in script.content
    style = await client.get("/docs/swagger-ui.css")
    assert style.status_code == 200 and "text/css" in style.headers["content-type"]
    for missing in ("/docs/index.html", "/docs/..%2F..%2Fpyproject.toml"):
        assert (await client.get(missing)).status_code == 404


async def test_one_access_log_line_per_request_without_the_token(
    client: httpx.AsyncClient, log_records: list[dict[str, Any]]
) -> None:
    await client.get(
        "/v1/products?page_token=secretish",
        headers={"Authorization": "Bearer very-secret-token"},
    )
    lines = [r for r in log_records if r.get("http.route") == "/v1/products"]
    assert len(lines) == 1
    line = lines[0]
    assert line["log.level"] == "info"
    assert line["http.request.method"] == "GET"
    assert line["http.response.status_code"] == 200
    assert line["event.duration_ms"] >= 0
    assert "very-secret-token" not in str(log_records)
    assert "secretish" not in str(log_records)


async def test_metrics_in_openmetrics_for_a_scraper_that_asks(client: httpx.AsyncClient) -> None:
    """Prometheus asks for OpenMetrics, the format that carries exemplars."""
    await client.get(f"/v1/products/{MUG_ID}")
    asked = await client.get(
        "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert asked.headers["content-type"].startswith("application/openmetrics-text")
    assert asked.text.rstrip().endswith("# EOF")
    assert "http_server_request_duration_seconds_bucket{" in asked.text
    plain = await client.get("/metrics")
    assert plain.headers["content-type"].startswith("text/plain")
    assert "# EOF" not in plain.text
