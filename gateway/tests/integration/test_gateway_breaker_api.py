"""An upstream that stops answering opens its circuit breaker: calls to it are answered 503
at once, without reaching it, the order details degrade at once, and one trial call after
the reset time closes the breaker again."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from gateway.app import create_app

from .upstream_fakes import MUG_ID, ORDER_ID, Upstream, gateway_settings

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer t"}
TIMEOUT = 0.5  # the upstream deadline
RESET = 2.0  # seconds the breaker stays open


async def test_a_silent_upstream_is_not_called_while_its_breaker_is_open(
    upstreams: dict[str, Upstream],
) -> None:
    products = upstreams["product"].fake
    settings = gateway_settings(
        upstreams,
        upstream_timeout_seconds=TIMEOUT,
        gateway_breaker_failures=2,
        gateway_breaker_reset_seconds=RESET,
    )
    app = create_app(settings=settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            for _ in range(2):  # product_service does not answer within the deadline
                assert (await http.get("/v1/products/slow")).status_code == 504
            calls = len(products.calls)

            started = time.monotonic()
            refused = await http.get(f"/v1/products/{MUG_ID}")
            details = await http.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
            took = time.monotonic() - started
            assert refused.status_code == 503
            assert refused.json()["code"] == 14
            assert 1 <= int(refused.headers["Retry-After"]) <= RESET + 1
            assert details.status_code == 200
            assert (details.json()["degraded"], details.json()["products"]) == (True, None)
            assert len(products.calls) == calls  # neither reached product_service
            assert took < TIMEOUT  # answered without waiting for a deadline
            # other upstreams are not affected
            assert details.json()["customer"] is not None

            metrics = (await http.get("/metrics")).text
            assert 'gateway_circuit_breaker_open{upstream="product.v1.ProductService"} 1.0' in (
                metrics
            )
            assert 'gateway_circuit_breaker_open{upstream="order.v1.OrderService"} 0.0' in metrics

            # after the reset time, one trial call goes through; its answer closes the breaker
            deadline = time.monotonic() + 10 * RESET
            while (await http.get(f"/v1/products/{MUG_ID}")).status_code != 200:
                assert time.monotonic() < deadline, "the breaker never let a call through again"
                await asyncio.sleep(0.05)
            assert products.last("GetProduct")[0].id == MUG_ID
            again = await http.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
            assert again.json()["degraded"] is False
            metrics = (await http.get("/metrics")).text
            assert 'gateway_circuit_breaker_open{upstream="product.v1.ProductService"} 0.0' in (
                metrics
            )
    products.never.set()
