"""GET /v1/orders/{id}/details composed from three upstreams, and degraded without two."""

from __future__ import annotations

import httpx
import pytest

from .upstream_fakes import CUSTOMER_ID, MUG_ID, ORDER_ID, PEN_ID, Upstream

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer the-callers-token"}


async def test_order_with_products_and_customer(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is False
    assert body["order"]["id"] == ORDER_ID
    assert body["order"]["total_cents"] == "2800"
    assert [p["id"] for p in body["products"]] == [MUG_ID, PEN_ID]
    assert body["customer"] == {"id": CUSTOMER_ID, "email": "ada@example.com", "full_name": "Ada"}
    batch, products_token = upstreams["product"].fake.last("BatchGetProducts")
    assert list(batch.ids) == [MUG_ID, PEN_ID]
    user, user_token = upstreams["auth"].fake.last("GetUser")
    assert user.id == CUSTOMER_ID
    _, order_token = upstreams["order"].fake.last("GetOrder")
    assert order_token == products_token == user_token == TOKEN["Authorization"]


async def test_degraded_without_product_service(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    await upstreams["product"].server.stop(None)
    response = await client.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True
    assert body["products"] is None
    assert body["customer"]["id"] == CUSTOMER_ID
    snapshots = [(i["product_name"], i["unit_price_cents"]) for i in body["order"]["items"]]
    assert snapshots == [("Mug", "1250"), ("Pen", "300")]


async def test_degraded_without_auth_service(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    await upstreams["auth"].server.stop(None)
    response = await client.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
    body = response.json()
    assert (response.status_code, body["degraded"]) == (200, True)
    # the order's own snapshot of its customer
    assert body["customer"] == {
        "id": CUSTOMER_ID,
        "email": "ada.lovelace@example.com",
        "full_name": "Ada Lovelace",
    }
    assert len(body["products"]) == 2


async def test_a_deleted_customer_is_null_without_degrading(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    upstreams["auth"].fake.deleted_users.add(CUSTOMER_ID)
    response = await client.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
    body = response.json()
    assert (response.status_code, body["degraded"], body["customer"]) == (200, False, None)
    assert len(body["products"]) == 2


async def test_errors_of_the_order_itself_map_normally(client: httpx.AsyncClient) -> None:
    missing = await client.get(
        "/v1/orders/0190a000-0000-7000-8000-00000000ffff/details", headers=TOKEN
    )
    assert (missing.status_code, missing.json()["code"]) == (404, 5)
    anonymous = await client.get(f"/v1/orders/{ORDER_ID}/details")
    assert (anonymous.status_code, anonymous.json()["code"]) == (401, 16)


async def test_without_order_service_it_is_a_503(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    await upstreams["order"].server.stop(None)
    response = await client.get(f"/v1/orders/{ORDER_ID}/details", headers=TOKEN)
    assert (response.status_code, response.json()["code"]) == (503, 14)
