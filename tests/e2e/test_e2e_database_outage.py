"""PostgreSQL ends every connection of the services, again and again, while a client places
orders through the gateway (as a database restart or failover would): a client that sends a
failed request again with its Idempotency-Key gets each order placed exactly once, every
order reaches its end, and the stock adds up."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from e2e_support import User, create_product, register, sign_in, stock_of, wait_terminal
from tienda_devstack.stack import Stack
from tienda_platform.testing import end_connections

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ORDERS = 40
# how often the connections are ended: several times during each order's saga
EVERY = 0.15


class ConnectionKiller(threading.Thread):
    """Ends every connection to the services' databases every EVERY seconds until stopped."""

    def __init__(self, database_urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.database_urls = database_urls
        self.stopped = threading.Event()
        self.ended = 0

    def run(self) -> None:
        while not self.stopped.wait(EVERY):
            for url in self.database_urls:
                self.ended += asyncio.run(end_connections(url))


def place_until_answered(api: httpx.Client, user: User, product_id: str, key: str) -> dict:
    """POST the order, and again with the same key after a server error, as a client should."""
    deadline = time.monotonic() + 60
    while True:
        response = api.post(
            "/v1/orders",
            headers={**user.headers, "Idempotency-Key": key},
            json={"items": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_ok"},
        )
        if response.status_code == 200:
            return dict(response.json())
        assert response.status_code in (500, 503), response.text  # never a client error
        assert time.monotonic() < deadline, f"order {key} never placed: {response.text}"


def test_orders_through_repeated_database_connection_losses_are_placed_once_and_finish(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    databases = [stack.env[f"{service}_DATABASE_URL"] for service in ("AUTH", "PRODUCT", "ORDER")]
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as api:
        admin = sign_in(api, stack.admin.email, stack.admin.password)
        product = create_product(api, admin, stock=ORDERS + 10)
        customer = register(api)

        killer = ConnectionKiller(databases)
        killer.start()
        try:
            placed = [
                place_until_answered(api, customer, product["id"], f"outage-{n}")
                for n in range(ORDERS)
            ]
        finally:
            killer.stopped.set()
            killer.join()
        assert killer.ended > 0  # the services did lose their connections

        ids = {order["id"] for order in placed}
        assert len(ids) == ORDERS  # one order per key, none twice
        for order_id in ids:
            assert wait_terminal(api, customer, order_id, timeout=60)["status"] == (
                "ORDER_STATUS_CONFIRMED"
            )
        assert stock_of(api, product["id"]) == 10
