"""Each kind of http rule, transcoded to a real gRPC call and back."""

from __future__ import annotations

import httpx
import pytest

from .upstream_fakes import MUG_ETAG, MUG_ID, ORDER_ID, Upstream

pytestmark = pytest.mark.integration

TOKEN = {"Authorization": "Bearer header.payload.signature"}


async def test_get_with_a_path_variable(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.get(f"/v1/products/{MUG_ID}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "id": MUG_ID,
        "sku": "MUG-1",
        "name": "Mug",
        "description": "",
        "price_cents": "1250",
        "stock": 7,
        "create_time": "2023-11-14T22:13:20Z",
        "etag": MUG_ETAG,
    }  # an unset message field (update_time) has presence, so it is left out
    assert response.headers["etag"] == f'"{MUG_ETAG}"'
    request, authorization = upstreams["product"].fake.last("GetProduct")
    assert request.id == MUG_ID and authorization is None


async def test_get_with_query_parameters(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.get("/v1/products", params={"pageSize": "1", "page_token": "t0"})
    assert response.status_code == 200
    body = response.json()
    assert [p["id"] for p in body["products"]] == [MUG_ID]
    assert body["next_page_token"] == "next"
    request, _ = upstreams["product"].fake.last("ListProducts")
    assert (request.page_size, request.page_token) == (1, "t0")


async def test_post_with_a_body_field_in_camel_case(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.post(
        "/v1/products",
        headers=TOKEN,
        json={"sku": "CUP-1", "name": "Cup", "priceCents": 900, "stock": 2},
    )
    assert response.status_code == 200
    assert response.json()["price_cents"] == "900"
    request, authorization = upstreams["product"].fake.last("CreateProduct")
    assert (request.product.sku, request.product.price_cents) == ("CUP-1", 900)
    assert authorization == TOKEN["Authorization"]


async def test_patch_derives_the_update_mask(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.patch(
        f"/v1/products/{MUG_ID}", headers=TOKEN, json={"name": "Big mug", "stock": 9}
    )
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["stock"]) == ("Big mug", 9)
    request, _ = upstreams["product"].fake.last("UpdateProduct")
    assert request.product.id == MUG_ID
    assert list(request.update_mask.paths) == ["name", "stock"]


async def test_patch_with_an_explicit_update_mask(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.patch(
        f"/v1/products/{MUG_ID}?update_mask=name",
        headers=TOKEN,
        json={"name": "Big mug", "stock": 9},
    )
    assert response.json()["stock"] == 7
    request, _ = upstreams["product"].fake.last("UpdateProduct")
    assert list(request.update_mask.paths) == ["name"]


async def test_post_with_body_star(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.post(
        "/v1/orders",
        headers=TOKEN,
        json={"items": [{"productId": MUG_ID, "quantity": 2}], "payment_token": "tok_ok"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "ORDER_STATUS_CONFIRMED"
    request, _ = upstreams["order"].fake.last("CreateOrder")
    assert (request.items[0].product_id, request.items[0].quantity) == (MUG_ID, 2)
    assert request.payment_token == "tok_ok"


async def test_an_idempotency_key_becomes_the_request_id(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    order = {"items": [{"productId": MUG_ID, "quantity": 1}], "payment_token": "tok_ok"}
    response = await client.post(
        "/v1/orders", headers={**TOKEN, "Idempotency-Key": " key-1 "}, json=order
    )
    assert response.status_code == 200
    request, _ = upstreams["order"].fake.last("CreateOrder")
    assert request.request_id == "key-1"

    # the body may name the request itself; the header must then agree with it
    agreeing = await client.post(
        "/v1/orders",
        headers={**TOKEN, "Idempotency-Key": "key-2"},
        json={**order, "requestId": "key-2"},
    )
    assert agreeing.status_code == 200
    calls = len(upstreams["order"].fake.calls)
    for headers, body in [
        ({"Idempotency-Key": "key-3"}, {**order, "request_id": "key-4"}),
        ({"Idempotency-Key": ""}, order),
    ]:
        refused = await client.post("/v1/orders", headers={**TOKEN, **headers}, json=body)
        assert refused.status_code == 400
        assert refused.json()["code"] == 3
    assert len(upstreams["order"].fake.calls) == calls  # refused before any call

    # a request without a request_id field takes no key (PATCH and DELETE are idempotent)
    patched = await client.patch(
        f"/v1/products/{MUG_ID}",
        headers={**TOKEN, "Idempotency-Key": "key-5"},
        json={"name": "Big mug"},
    )
    assert patched.status_code == 200


async def test_custom_verb_without_a_body(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.post(f"/v1/orders/{ORDER_ID}:cancel", headers=TOKEN)
    assert response.status_code == 200
    assert response.json()["status"] == "ORDER_STATUS_CANCELLED"
    request, _ = upstreams["order"].fake.last("CancelOrder")
    assert request.id == ORDER_ID


async def test_empty_response_and_public_routes(client: httpx.AsyncClient) -> None:
    deleted = await client.delete("/v1/users/me", headers=TOKEN)
    assert (deleted.status_code, deleted.json()) == (200, {})
    jwks = await client.get("/.well-known/jwks.json")
    assert jwks.json()["keys"][0]["kid"] == "k1"
    login = await client.post("/v1/auth/login", json={"email": "a@b.c", "password": "pw"})
    assert login.json()["expires_in"] == 900


async def test_authorization_passes_through_as_metadata(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream]
) -> None:
    response = await client.get("/v1/users/me", headers={"Authorization": "Bearer abc.def.ghi"})
    assert response.status_code == 200
    _, authorization = upstreams["auth"].fake.last("GetCurrentUser")
    assert authorization == "Bearer abc.def.ghi"


@pytest.mark.parametrize(
    "header", [b"Bearer " + b"x" * (8 * 1024), "Bearer caf\u00e9".encode("latin-1"), b"Bearer \x01"]
)
async def test_oversized_or_non_ascii_authorization_is_a_401(
    client: httpx.AsyncClient, upstreams: dict[str, Upstream], header: bytes
) -> None:
    response = await client.get("/v1/users/me", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.json() == {
        "code": 16,
        "message": "malformed Authorization header",
        "details": [],
    }
    assert upstreams["auth"].fake.calls == []
