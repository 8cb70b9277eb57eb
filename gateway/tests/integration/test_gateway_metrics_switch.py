"""METRICS_ENABLED=false: the gateway records no request metrics and serves no /metrics; the
gRPC channels it opens count nothing either."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from gateway.app import create_app
from prometheus_client import REGISTRY

from .upstream_fakes import Upstream, gateway_settings

pytestmark = pytest.mark.integration


def answered() -> float:
    labels = {"method": "GET", "route": "/v1/products", "status_code": "200"}
    return REGISTRY.get_sample_value("http_server_requests_total", labels) or 0.0


def upstream_calls() -> float:
    labels = {"grpc_service": "product.v1.ProductService", "grpc_method": "ListProducts"}
    return REGISTRY.get_sample_value("grpc_client_handling_seconds_count", labels) or 0.0


@pytest.fixture(params=["true", "false"])
async def gateway(
    request: pytest.FixtureRequest,
    upstreams: dict[str, Upstream],
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[tuple[bool, httpx.AsyncClient]]:
    monkeypatch.setenv("METRICS_ENABLED", request.param)
    app = create_app(settings=gateway_settings(upstreams))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield request.param == "true", client


async def test_requests_are_measured_only_with_metrics_on(
    gateway: tuple[bool, httpx.AsyncClient],
) -> None:
    enabled, client = gateway
    before, calls_before = answered(), upstream_calls()
    response = await client.get("/v1/products")
    assert response.status_code == 200
    assert answered() == before + (1 if enabled else 0)
    assert upstream_calls() == calls_before + (1 if enabled else 0)

    page = await client.get("/metrics")
    if enabled:
        assert page.status_code == 200
        assert "http_server_requests_total" in page.text
    else:
        assert page.status_code == 404
        assert page.json()["code"] == 5  # the REST shape of NOT_FOUND, like any unknown path
