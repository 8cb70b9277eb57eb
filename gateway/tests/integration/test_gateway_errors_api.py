"""Every error in the REST shape: bad input, size limits, routing, and upstream statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from gateway.app import create_app

from .upstream_fakes import MUG_ID, Upstream, gateway_settings

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer t"}
LEAKS = ("Traceback", 'File "', "127.0.0.1", "10.1.2.3", "secret boom", "site-packages")


def assert_error(response: httpx.Response, status: int, code: int) -> dict[str, Any]:
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert len(body["message"]) < 500
    for leak in LEAKS:
        assert leak not in response.text
    return body


async def test_malformed_json(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/orders", headers=TOKEN, content=b'{"items": [')
    assert assert_error(response, 400, 3)["message"] == "the request body is not valid JSON"


async def test_json_that_is_not_an_object(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/orders", headers=TOKEN, json=[1, 2])
    assert_error(response, 400, 3)


async def test_wrong_types_and_unknown_fields(client: httpx.AsyncClient) -> None:
    wrong = await client.post(
        "/v1/orders",
        headers=TOKEN,
        json={"items": [{"product_id": MUG_ID, "quantity": "many"}], "payment_token": "x"},
    )
    assert "quantity" in assert_error(wrong, 400, 3)["message"]
    unknown = await client.post("/v1/auth/login", json={"email": "a", "admin": True})
    assert "admin" in assert_error(unknown, 400, 3)["message"]
    bad_query = await client.get("/v1/products?page_size=lots")
    assert_error(bad_query, 400, 3)


async def test_a_one_megabyte_value_is_not_echoed(
    upstreams: dict[str, Upstream],
) -> None:
    app = create_app(settings=gateway_settings(upstreams))  # the default 1 MiB limit
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            response = await http.post(
                "/v1/auth/login", json={"email": "x" * 1_000_000, "password": 5}
            )
    assert_error(response, 400, 3)
    assert len(response.content) < 1000


async def test_body_above_the_limit_by_content_length(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/orders", headers=TOKEN, content=b" " * (64 * 1024 + 1))
    assert_error(response, 413, 8)


async def test_streamed_body_above_the_limit_is_not_read_to_the_end(
    client: httpx.AsyncClient,
) -> None:
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1000):
            sent += 1
            yield b" " * 1024

    response = await client.post("/v1/orders", headers=TOKEN, content=chunks())
    assert_error(response, 413, 8)
    assert sent < 1000


async def test_unknown_route_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nothing-here"), 404, 5)
    assert_error(await client.get("/v1/products/a/b/c"), 404, 5)
    wrong = await client.put("/v1/products")
    assert_error(wrong, 405, 12)
    assert wrong.headers["allow"] == "GET, POST"


async def test_invalid_argument_with_field_violations(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/products", headers=TOKEN, json={"price_cents": 5})
    body = assert_error(response, 400, 3)
    assert body["message"] == "invalid product"
    assert body["details"] == [
        {
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "field_violations": [
                {"field": "product.sku", "description": "is required"},
                {"field": "product.name", "description": "is required"},
            ],
        }
    ]


async def test_not_found_and_unauthenticated(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/products/0190a000-0000-7000-8000-00000000ffff")
    assert_error(missing, 404, 5)
    anonymous = await client.get("/v1/orders/whatever")
    assert_error(anonymous, 401, 16)
    assert anonymous.headers["www-authenticate"] == "Bearer"


async def test_an_upstream_crash_is_a_500_with_a_correlation_id(
    client: httpx.AsyncClient, log_records: list[dict[str, Any]]
) -> None:
    response = await client.get("/v1/products/boom")
    body = assert_error(response, 500, 13)
    correlation_id = response.headers["x-correlation-id"]
    assert correlation_id in body["message"]
    assert body["details"][0]["request_id"] == correlation_id
    logged = [r for r in log_records if r.get("tienda.correlation_id") == correlation_id]
    assert logged and logged[0]["log.level"] == "error"


async def test_unavailable_upstream_is_a_503_without_its_address(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    await upstreams["product"].server.stop(None)
    body = assert_error(await client.get(f"/v1/products/{MUG_ID}"), 503, 14)
    assert "unavailable" in body["message"]


async def test_slow_upstream_is_a_504(upstreams: dict[str, Upstream]) -> None:
    app = create_app(settings=gateway_settings(upstreams, upstream_timeout_seconds=0.2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            assert_error(await http.get("/v1/products/slow"), 504, 4)
