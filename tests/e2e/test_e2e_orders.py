"""The order flow through REST against the real processes."""

from __future__ import annotations

import httpx
import pytest
from e2e_support import User, create_product, eventually, stock_of, wait_terminal
from tienda_devstack.stack import Stack

from .order_outcomes import (
    CANCELLED_BY_CUSTOMER,
    CONFIRMED,
    PAYMENT_DECLINED,
    PAYMENT_TIMED_OUT,
    PENDING,
    out_of_stock,
    outcome,
    place_pending_order,
)

pytestmark = pytest.mark.e2e


def test_confirmed_order_takes_stock_and_snapshots_prices(
    api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=5, price_cents=1250)

    order = place_pending_order(api, customer, product["id"], 2, "tok_ok")

    assert outcome(order) == CONFIRMED
    assert order["customer_id"] == customer.id
    assert int(order["total_cents"]) == 2500
    assert order["items"] == [
        {
            "product_id": product["id"],
            "product_name": product["name"],
            "quantity": 2,
            "unit_price_cents": "1250",
        }
    ]
    assert stock_of(api, product["id"]) == 3


def test_an_order_sent_again_with_its_idempotency_key_is_placed_once(
    api: httpx.Client, admin: User, customer: User
) -> None:
    """A client that lost the answer to its POST sends it again with the same
    Idempotency-Key: the same order comes back, and the stock is taken once."""
    product = create_product(api, admin, stock=5)
    body = {"items": [{"product_id": product["id"], "quantity": 2}], "payment_token": "tok_ok"}
    headers = {**customer.headers, "Idempotency-Key": "3f1c6a52-order-1"}

    first = api.post("/v1/orders", headers=headers, json=body)
    assert first.status_code == 200, first.text
    assert first.json()["status"] == PENDING
    order = wait_terminal(api, customer, first.json()["id"])
    assert outcome(order) == CONFIRMED
    again = api.post("/v1/orders", headers=headers, json=body)
    assert again.status_code == 200, again.text
    assert again.json() == order  # as it is now: CONFIRMED

    reused = api.post("/v1/orders", headers=headers, json={**body, "payment_token": "tok_declined"})
    assert reused.status_code == 409, reused.text
    assert "already used" in reused.json()["message"]
    assert stock_of(api, product["id"]) == 3

    def orders_of_the_product() -> list[str]:
        listed = api.get("/v1/orders", headers=customer.headers).json()["orders"]
        # a summary whose order.created is not projected yet has no items (read_model.py)
        return [
            o["id"] for o in listed if o["items"] and o["items"][0]["product_id"] == product["id"]
        ]

    assert eventually(orders_of_the_product) == [order["id"]]


def test_a_stock_count_set_from_a_stale_read_is_refused_not_applied(
    api: httpx.Client, admin: User, customer: User
) -> None:
    """An admin counts 5 on the shelf from a read made before an order took 2: that write
    would give the order's units away again. With If-Match it fails (412) and loses nothing."""
    product = create_product(api, admin, stock=5)
    path = f"/v1/products/{product['id']}"
    read = api.get(path)
    assert read.headers["etag"] == f'"{read.json()["etag"]}"'

    assert outcome(place_pending_order(api, customer, product["id"], 2, "tok_ok")) == CONFIRMED

    stale = api.patch(
        path, headers={**admin.headers, "If-Match": read.headers["etag"]}, json={"stock": 5}
    )
    assert stale.status_code == 412, stale.text
    assert stock_of(api, product["id"]) == 3
    now = api.get(path, headers={"If-None-Match": read.headers["etag"]})
    assert now.status_code == 200 and now.headers["etag"] != read.headers["etag"]
    assert api.get(path, headers={"If-None-Match": now.headers["etag"]}).status_code == 304

    counted = api.patch(
        path, headers={**admin.headers, "If-Match": now.headers["etag"]}, json={"stock": 8}
    )
    assert counted.status_code == 200, counted.text
    assert counted.json()["stock"] == 8 and counted.headers["etag"] != now.headers["etag"]
    assert stock_of(api, product["id"]) == 8


def test_declined_payment_cancels_and_restores_stock(
    api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=4)

    order = place_pending_order(api, customer, product["id"], 3, "tok_declined")

    assert outcome(order) == PAYMENT_DECLINED
    assert stock_of(api, product["id"]) == 4


def test_payment_timeout_cancels_and_restores_stock(
    api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=4)

    order = place_pending_order(api, customer, product["id"], 1, "tok_timeout")

    assert outcome(order) == PAYMENT_TIMED_OUT
    assert stock_of(api, product["id"]) == 4


def test_more_than_the_stock_is_rejected(api: httpx.Client, admin: User, customer: User) -> None:
    product = create_product(api, admin, stock=2)

    order = place_pending_order(api, customer, product["id"], 3, "tok_ok")

    assert outcome(order) == out_of_stock(product["sku"])
    assert stock_of(api, product["id"]) == 2


def test_owner_cancels_confirmed_order_and_stock_returns(
    api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=3)
    order = place_pending_order(api, customer, product["id"], 2, "tok_ok")
    assert outcome(order) == CONFIRMED
    assert stock_of(api, product["id"]) == 1

    response = api.post(f"/v1/orders/{order['id']}:cancel", headers=customer.headers, json={})

    assert response.status_code == 200, response.text
    assert outcome(response.json()) == CANCELLED_BY_CUSTOMER
    # the saga gives the stock back and refunds after the answer
    eventually(lambda: stock_of(api, product["id"]) == 3)
    again = api.post(f"/v1/orders/{order['id']}:cancel", headers=customer.headers, json={})
    assert again.status_code == 400
    assert again.json()["code"] == 9  # FAILED_PRECONDITION


def test_orders_are_visible_to_their_owner_and_admins_only(
    api: httpx.Client, admin: User, customer: User, other_customer: User
) -> None:
    product = create_product(api, admin, stock=3)
    order = place_pending_order(api, customer, product["id"], 1)
    path = f"/v1/orders/{order['id']}"

    assert api.get(path, headers=other_customer.headers).status_code in (403, 404)
    assert api.post(f"{path}:cancel", headers=other_customer.headers, json={}).status_code in (
        403,
        404,
    )
    assert api.get(path, headers=admin.headers).status_code == 200
    assert api.get(path).status_code == 401

    # lists come from the read model, which is eventually consistent
    own = eventually(lambda: api.get("/v1/orders", headers=customer.headers).json()["orders"])
    assert [o["id"] for o in own] == [order["id"]]
    assert api.get("/v1/orders", headers=other_customer.headers).json()["orders"] == []
    everyone = api.get("/v1/orders", headers=admin.headers, params={"page_size": 100}).json()
    assert order["id"] in {o["id"] for o in everyone["orders"]}


def test_order_details_compose_order_products_and_customer(
    api: httpx.Client, admin: User, customer: User
) -> None:
    product = create_product(api, admin, stock=3)
    order = place_pending_order(api, customer, product["id"], 1)

    response = api.get(f"/v1/orders/{order['id']}/details", headers=customer.headers)

    assert response.status_code == 200, response.text
    details = response.json()
    assert details["degraded"] is False
    assert details["order"]["id"] == order["id"]
    assert details["customer"] == {
        "id": customer.id,
        "email": customer.email,
        "full_name": "Ada Customer",
    }
    assert [p["id"] for p in details["products"]] == [product["id"]]


def test_order_details_come_from_the_order_s_snapshots_while_auth_service_is_down(
    api: httpx.Client, admin: User, customer: User, stack: Stack
) -> None:
    product = create_product(api, admin, stock=3)
    order = place_pending_order(api, customer, product["id"], 1)

    def snapshot() -> bool:
        """order_service's copy of the customer, from user.registered (eventually)."""
        got = api.get(f"/v1/orders/{order['id']}", headers=customer.headers).json()
        return got.get("customer_email") == customer.email

    eventually(snapshot)
    stack.kill("auth_service")
    try:
        response = api.get(f"/v1/orders/{order['id']}/details", headers=customer.headers)
        assert response.status_code == 200, response.text
        details = response.json()
        assert details["degraded"] is True
        assert details["customer"] == {
            "id": customer.id,
            "email": customer.email,
            "full_name": "Ada Customer",
        }
        assert [p["id"] for p in details["products"]] == [product["id"]]
    finally:
        stack.start(("auth_service",))
        stack.wait_ready()


def test_anonymous_and_customers_cannot_do_admin_or_customer_things(
    api: httpx.Client, customer: User
) -> None:
    anonymous_order = api.post(
        "/v1/orders",
        json={"items": [{"product_id": customer.id, "quantity": 1}], "payment_token": "tok_ok"},
    )
    assert anonymous_order.status_code == 401
    assert anonymous_order.json()["code"] == 16

    product = api.post(
        "/v1/products",
        headers=customer.headers,
        json={"sku": "NOPE-1", "name": "x", "price_cents": 1, "stock": 1},
    )
    assert product.status_code == 403
    assert product.json()["code"] == 7
