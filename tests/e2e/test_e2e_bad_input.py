"""Bad input over REST and gRPC gets a 4xx (or a 4xx-class gRPC status) with a safe message."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from e2e_support import User, create_product
from order.v1 import order_pb2, order_pb2_grpc
from product.v1 import product_pb2, product_pb2_grpc
from tienda_devstack.stack import Stack

pytestmark = pytest.mark.e2e

ONE_MB = "x" * 1_000_000


def assert_safe_client_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text[:500]
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert isinstance(body["code"], int)
    assert len(body["message"]) < 500
    for leak in ("Traceback", 'File "', "127.0.0.1", "/work/", "site-packages"):
        assert leak not in response.text
    return body


def test_malformed_json_is_a_400(api: httpx.Client, customer: User) -> None:
    response = api.post(
        "/v1/orders",
        headers={**customer.headers, "Content-Type": "application/json"},
        content=b'{"items": [',
    )
    assert assert_safe_client_error(response, 400)["code"] == 3


def test_json_that_is_not_an_object_is_a_400(api: httpx.Client, customer: User) -> None:
    response = api.post("/v1/orders", headers=customer.headers, json=[1, 2])
    assert_safe_client_error(response, 400)


def test_wrong_types_are_a_400(api: httpx.Client, customer: User) -> None:
    response = api.post(
        "/v1/orders",
        headers=customer.headers,
        json={
            "items": [{"product_id": str(uuid.uuid4()), "quantity": "many"}],
            "payment_token": "tok_ok",
        },
    )
    assert_safe_client_error(response, 400)


def test_unknown_fields_are_a_400(api: httpx.Client) -> None:
    response = api.post("/v1/auth/login", json={"email": "a@b.c", "password": "x", "admin": True})
    assert_safe_client_error(response, 400)


def test_missing_fields_name_the_field(api: httpx.Client) -> None:
    response = api.post("/v1/auth/register", json={"email": "someone@example.com"})
    body = assert_safe_client_error(response, 400)
    fields = {v["field"] for d in body["details"] for v in d.get("field_violations", [])}
    assert "password" in fields


@pytest.mark.parametrize("quantity", [0, -1])
def test_zero_or_negative_quantity_is_a_400(
    api: httpx.Client, admin: User, customer: User, quantity: int
) -> None:
    product = create_product(api, admin, stock=5)
    response = api.post(
        "/v1/orders",
        headers=customer.headers,
        json={
            "items": [{"product_id": product["id"], "quantity": quantity}],
            "payment_token": "tok_ok",
        },
    )
    body = assert_safe_client_error(response, 400)
    fields = {v["field"] for d in body["details"] for v in d.get("field_violations", [])}
    assert any("quantity" in f for f in fields)


def test_one_megabyte_strings_are_refused(api: httpx.Client, admin: User) -> None:
    product = api.post(
        "/v1/products",
        headers=admin.headers,
        json={"sku": "BIG-1", "name": ONE_MB, "price_cents": 100, "stock": 1},
    )
    # within the gateway's body limit (1 MiB): the services' own bounds refuse them
    assert product.status_code == 400
    assert_safe_client_error(product, 400)
    login = api.post("/v1/auth/login", json={"email": ONE_MB, "password": "x"})
    assert login.status_code == 400
    assert_safe_client_error(login, 400)


def test_oversized_body_is_a_413(api: httpx.Client) -> None:
    response = api.post("/v1/auth/register", content=b"{" + b" " * (2 * 1024 * 1024) + b"}")
    assert assert_safe_client_error(response, 413)["code"] == 8


def test_unknown_and_malformed_ids(api: httpx.Client, customer: User) -> None:
    assert_safe_client_error(api.get(f"/v1/products/{uuid.uuid4()}"), 404)
    assert_safe_client_error(api.get("/v1/products/not-a-uuid"), 400)
    assert_safe_client_error(api.get(f"/v1/orders/{uuid.uuid4()}", headers=customer.headers), 404)
    ordered = api.post(
        "/v1/orders",
        headers=customer.headers,
        json={
            "items": [{"product_id": str(uuid.uuid4()), "quantity": 1}],
            "payment_token": "tok_ok",
        },
    )
    assert_safe_client_error(ordered, 404)


def test_unknown_route_and_method(api: httpx.Client) -> None:
    assert_safe_client_error(api.get("/v1/nothing-here"), 404)
    assert api.put("/v1/products").status_code == 405


def _signing_key(stack: Stack) -> tuple[str, Ed25519PrivateKey]:
    with sqlite3.connect(stack.data_dir / "auth.db") as db:
        kid, pem = db.execute(
            "SELECT kid, private_key_pem FROM signing_keys ORDER BY create_time DESC LIMIT 1"
        ).fetchone()
    key = load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return kid, key


def _claims(user: User, **overrides: object) -> dict:
    now = int(time.time())
    return {
        "sub": user.id,
        "role": "admin",
        "typ": "access",
        "iss": "tienda-auth",
        "aud": "tienda",
        "iat": now,
        "exp": now + 300,
        **overrides,
    }


def test_forged_expired_and_unsigned_tokens_are_a_401(
    api: httpx.Client, stack: Stack, customer: User
) -> None:
    kid, real_key = _signing_key(stack)
    expired = jwt.encode(
        _claims(customer, iat=int(time.time()) - 3600, exp=int(time.time()) - 60),
        real_key,
        algorithm="EdDSA",
        headers={"kid": kid},
    )
    forged = jwt.encode(
        _claims(customer), Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}
    )
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": kid}).encode()).decode()
    payload = jwt.utils.base64url_encode(json.dumps(_claims(customer)).encode()).decode()
    unsigned = f"{header}.{payload}."
    for token in (expired, forged, unsigned, "not-a-jwt", customer.token + "x"):
        response = api.get("/v1/orders", headers={"Authorization": f"Bearer {token}"})
        assert assert_safe_client_error(response, 401)["code"] == 16
        created = api.post(
            "/v1/products",
            headers={"Authorization": f"Bearer {token}"},
            json={"sku": "FORGED-1", "name": "x", "price_cents": 1, "stock": 1},
        )
        assert_safe_client_error(created, 401)
    # the real key still works, so the refusals above are about the tokens themselves
    valid = jwt.encode(
        _claims(customer, role="customer"), real_key, algorithm="EdDSA", headers={"kid": kid}
    )
    assert api.get("/v1/orders", headers={"Authorization": f"Bearer {valid}"}).status_code == 200


async def test_bad_input_over_grpc_is_refused_with_client_statuses(
    stack: Stack, customer: User, admin: User
) -> None:
    auth = (("authorization", f"Bearer {customer.token}"),)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.product}") as channel:
        products = product_pb2_grpc.ProductServiceStub(channel)
        for request, code in [
            (product_pb2.GetProductRequest(id="nope"), grpc.StatusCode.INVALID_ARGUMENT),
            (product_pb2.GetProductRequest(id=str(uuid.uuid4())), grpc.StatusCode.NOT_FOUND),
            (product_pb2.GetProductRequest(id=ONE_MB), grpc.StatusCode.INVALID_ARGUMENT),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await products.GetProduct(request)
            assert caught.value.code() == code
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await products.CreateProduct(
                product_pb2.CreateProductRequest(
                    product=product_pb2.Product(sku="X-1", name="x", price_cents=1, stock=1)
                ),
                metadata=auth,
            )
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await products.ReserveStock(
                product_pb2.ReserveStockRequest(
                    order_id=str(uuid.uuid4()),
                    items=[product_pb2.StockItem(product_id=str(uuid.uuid4()), quantity=1)],
                )
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.ports.order}") as channel:
        orders = order_pb2_grpc.OrderServiceStub(channel)
        bad_orders = [
            order_pb2.CreateOrderRequest(payment_token="tok_ok"),
            order_pb2.CreateOrderRequest(
                items=[order_pb2.OrderItemRequest(product_id=str(uuid.uuid4()), quantity=0)],
                payment_token="tok_ok",
            ),
            order_pb2.CreateOrderRequest(
                items=[order_pb2.OrderItemRequest(product_id=str(uuid.uuid4()), quantity=1)],
                payment_token=ONE_MB,
            ),
        ]
        for request in bad_orders:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await orders.CreateOrder(request, metadata=auth)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "Traceback" not in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await orders.ListOrders(
                order_pb2.ListOrdersRequest(),
                metadata=(("authorization", "Bearer forged.token.here"),),
            )
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
