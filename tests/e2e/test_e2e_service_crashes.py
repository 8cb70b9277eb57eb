"""Services killed under load, in both saga modes: product_service, order_service and the
gateway are each killed (SIGKILL, as a crash would end them) while customers keep placing
orders, on SQLite (the session's stack) and on PostgreSQL, and each customer sends an unanswered order again with its Idempotency-Key until it
is answered, as a client should through an outage. Every order is placed once and reaches
the end its payment decides, the stock adds up, and the read model hears of every order: a
crash delays work, it loses none."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest
from e2e_support import (
    User,
    create_product,
    eventually,
    register,
    sign_in,
    stock_of,
    wait_terminal,
)
from tienda_devstack.stack import Stack

from .order_outcomes import CONFIRMED, PAYMENT_DECLINED, outcome

pytestmark = pytest.mark.e2e

STOCK = 10_000
# one order in three is declined: its reservation is given back by the compensation
TOKENS = ("tok_ok", "tok_ok", "tok_declined")
# how long one order may go unanswered before its customer gives up (an outage is seconds)
GIVE_UP_AFTER = 90.0


@dataclass(frozen=True)
class Placed:
    customer: User
    key: str
    payment_token: str
    order_id: str


class Customers:
    """Customers placing orders of one product one after another, each on its own thread,
    until stopped; an order that gets no answer, or a 5xx, is sent again with the same
    Idempotency-Key after a short backoff."""

    def __init__(self, base_url: str, customers: list[User], product_id: str) -> None:
        self.placed: list[Placed] = []
        self.unanswered = 0  # attempts that got a 5xx or no answer at all
        self.errors: list[str] = []
        self._base_url = base_url
        self._product_id = product_id
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [
            threading.Thread(target=self._place_orders, args=(customer,), daemon=True)
            for customer in customers
        ]

    def __enter__(self) -> Customers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_AFTER + 10)
        assert not any(thread.is_alive() for thread in self._threads), "a customer hung"

    def wait_for_more(
        self, count: Callable[[], int], more: int, what: str, timeout: float = 60.0
    ) -> None:
        """Wait until count() has grown by `more` (failing at once if a customer failed)."""
        target = count() + more
        deadline = time.monotonic() + timeout
        while count() < target:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
            time.sleep(0.05)

    def placed_count(self) -> int:
        with self._lock:
            return len(self.placed)

    def unanswered_count(self) -> int:
        with self._lock:
            return self.unanswered

    def _place_orders(self, customer: User) -> None:
        with httpx.Client(base_url=self._base_url, timeout=10.0) as api:
            number = 0
            while not self._stopping.is_set():
                token = TOKENS[number % len(TOKENS)]
                key = f"{customer.id}-{number}"
                number += 1
                order_id = self._place(api, customer, key, token)
                if order_id is None:
                    return
                with self._lock:
                    self.placed.append(Placed(customer, key, token, order_id))

    def _place(self, api: httpx.Client, customer: User, key: str, token: str) -> str | None:
        body = {"items": [{"product_id": self._product_id, "quantity": 1}], "payment_token": token}
        headers = {**customer.headers, "Idempotency-Key": key}
        deadline = time.monotonic() + GIVE_UP_AFTER
        while time.monotonic() < deadline:
            try:
                response = api.post("/v1/orders", headers=headers, json=body)
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return str(response.json()["id"])
            if response is not None and response.status_code < 500:
                self.errors.append(f"order {key}: {response.status_code} {response.text}")
                return None
            with self._lock:
                self.unanswered += 1
            self._stopping.wait(0.1)  # the client's backoff before it sends the order again
        self.errors.append(f"order {key}: no answer within {GIVE_UP_AFTER:.0f} s")
        return None


def listed(api: httpx.Client, customer: User, product_id: str) -> dict[str, str]:
    """The customer's orders of the product as the read model lists them: id -> status.

    A summary that a status event started before its order.created was projected (that
    event's delivery was cut short by a crash, and is retried) has no items yet: it is
    listed as incomplete, which matches no expectation until its items arrive."""
    response = api.get("/v1/orders", headers=customer.headers, params={"page_size": 100})
    assert response.status_code == 200, response.text
    body = response.json()
    assert not body.get("next_page_token"), "more orders than one page"
    return {
        order["id"]: order["status"] if order["items"] else "incomplete: no order.created yet"
        for order in body["orders"]
        if not order["items"] or order["items"][0]["product_id"] == product_id
    }


def test_orders_through_service_crashes_are_placed_once_and_all_finish(
    api: httpx.Client, admin: User, stack: Stack
) -> None:
    crash_services_under_load(api, admin, stack)


@pytest.mark.postgres
def test_on_postgresql_orders_through_service_crashes_are_placed_once_and_all_finish(
    postgres_stack: Stack,
) -> None:
    stack = postgres_stack
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as api:
        admin = sign_in(api, stack.admin.email, stack.admin.password)
        crash_services_under_load(api, admin, stack)


def crash_services_under_load(api: httpx.Client, admin: User, stack: Stack) -> None:
    product = create_product(api, admin, stock=STOCK)
    customers = [register(api, f"Crash Customer{number}") for number in range(3)]

    with Customers(stack.gateway_url, customers, product["id"]) as load:
        for service in ("product_service", "order_service", "gateway"):
            load.wait_for_more(load.placed_count, 6, f"orders placed before {service} dies")
            stack.kill(service)
            try:
                # the customers felt the crash: orders went unanswered while it was down
                load.wait_for_more(load.unanswered_count, 3, f"orders sent while {service} is down")
            finally:  # the later tests share this stack
                stack.start((service,))
                stack.wait_ready(timeout=60)
        load.wait_for_more(load.placed_count, 6, "orders placed after the crashes")
    assert not load.errors, load.errors

    # placed once: one order per Idempotency-Key, however many times it was sent
    assert len({p.key for p in load.placed}) == len({p.order_id for p in load.placed})
    assert len(load.placed) == len({p.order_id for p in load.placed})
    # each order reaches the end its payment decides
    for order in load.placed:
        ended = wait_terminal(api, order.customer, order.order_id, timeout=90)
        expected = CONFIRMED if order.payment_token == "tok_ok" else PAYMENT_DECLINED
        assert outcome(ended) == expected, ended
    # the stock adds up: taken by each confirmed order, given back by each declined one
    confirmed = sum(1 for p in load.placed if p.payment_token == "tok_ok")
    eventually(lambda: stock_of(api, product["id"]) == STOCK - confirmed, timeout=60)
    # the read model heard of every order and of its end, and of no other order
    for customer in customers:
        expected = {
            p.order_id: (CONFIRMED if p.payment_token == "tok_ok" else PAYMENT_DECLINED)[0]
            for p in load.placed
            if p.customer is customer
        }

        def listed_as_placed(
            customer: User = customer, expected: dict[str, str] = expected
        ) -> bool:
            return listed(api, customer, product["id"]) == expected

        eventually(listed_as_placed, timeout=60)
