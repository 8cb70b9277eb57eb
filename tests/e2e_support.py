"""What the end-to-end and contract tests share: users, products and orders over REST."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

T = TypeVar("T")

TERMINAL = {"ORDER_STATUS_CONFIRMED", "ORDER_STATUS_REJECTED", "ORDER_STATUS_CANCELLED"}


@dataclass
class User:
    id: str
    email: str
    password: str
    token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


def login(api: httpx.Client, email: str, password: str) -> tuple[str, str]:
    response = api.post("/v1/auth/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    body = response.json()
    return body["access_token"], body["refresh_token"]


def sign_in(api: httpx.Client, email: str, password: str) -> User:
    """A user who exists already (the admin of a stack), signed in."""
    token, refresh = login(api, email, password)
    return User("admin", email, password, token, refresh)


def register(api: httpx.Client, name: str = "Ada Customer") -> User:
    email = f"{name.split()[0].lower()}-{uuid.uuid4().hex[:8]}@example.com"
    password = "correct-horse-9"
    response = api.post(
        "/v1/auth/register", json={"email": email, "password": password, "full_name": name}
    )
    assert response.status_code == 200, response.text
    user_id = response.json()["id"]
    token, refresh = login(api, email, password)
    return User(user_id, email, password, token, refresh)


def create_product(api: httpx.Client, admin: User, *, stock: int, price_cents: int = 1250) -> dict:
    sku = f"SKU-{uuid.uuid4().hex[:10]}"
    response = api.post(
        "/v1/products",
        headers=admin.headers,
        json={
            "sku": sku,
            "name": f"Mug {sku}",
            "description": "A mug",
            "price_cents": price_cents,
            "stock": stock,
        },
    )
    assert response.status_code == 200, response.text
    return response.json()


def wait_terminal(api: httpx.Client, user: User, order_id: str, timeout: float = 15.0) -> dict:
    """Poll the order until it leaves PENDING (the saga may finish after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/v1/orders/{order_id}", headers=user.headers)
        assert response.status_code == 200, response.text
        order = response.json()
        if order["status"] in TERMINAL:
            return order
        assert time.monotonic() < deadline, f"order {order_id} still {order['status']}"
        time.sleep(0.02)


def submit_order(
    api: httpx.Client, user: User, product_id: str, quantity: int = 1, payment_token: str = "tok_ok"
) -> dict:
    """POST /v1/orders for one product line; the order as created (PENDING, usually)."""
    response = api.post(
        "/v1/orders",
        headers=user.headers,
        json={
            "items": [{"product_id": product_id, "quantity": quantity}],
            "payment_token": payment_token,
        },
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def place_order(
    api: httpx.Client, user: User, product_id: str, quantity: int, payment_token: str = "tok_ok"
) -> dict:
    """An order submitted and then waited for until terminal."""
    order = submit_order(api, user, product_id, quantity, payment_token)
    return wait_terminal(api, user, order["id"])


def stock_of(api: httpx.Client, product_id: str) -> int:
    response = api.get(f"/v1/products/{product_id}")
    assert response.status_code == 200, response.text
    return int(response.json()["stock"])


def eventually(check: Callable[[], T], timeout: float = 20.0) -> T:
    """Retry check() until it returns a truthy value (eventual consistency), then return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, "never became true"
        time.sleep(0.05)
