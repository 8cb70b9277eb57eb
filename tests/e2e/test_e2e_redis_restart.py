"""Redis restarted under load, in both saga modes, stopped cleanly or killed: the events
waiting in the outboxes and the entries waiting in the streams go on once it is back, so
every order placed before, during and after the restart reaches its end, and the stock adds
up."""

from __future__ import annotations

import httpx
import pytest
from e2e_support import User, create_product, eventually, stock_of, submit_order, wait_terminal
from tienda_devstack.stack import Stack

pytestmark = pytest.mark.e2e


def place(api: httpx.Client, customer: User, product_id: str) -> str:
    return str(submit_order(api, customer, product_id)["id"])


@pytest.mark.parametrize("ending", ["stop", "kill"])
def test_orders_placed_around_a_redis_restart_all_finish(
    api: httpx.Client, admin: User, customer: User, stack: Stack, ending: str
) -> None:
    assert stack.redis is not None, "the end-to-end stack runs its own Redis"
    product = create_product(api, admin, stock=100)
    before = [place(api, customer, product["id"]) for _ in range(10)]

    # ended with its entries pending in the groups, and events unsent in the outboxes; a
    # killed Redis saves nothing on the way out, and restarts from its append-only file
    if ending == "kill":
        stack.redis.kill()
    else:
        stack.redis.stop()
    try:
        during = [place(api, customer, product["id"]) for _ in range(5)]  # state commits anyway
    finally:  # the later tests share this stack
        stack.redis.start()
    after = [place(api, customer, product["id"]) for _ in range(5)]

    orders = [wait_terminal(api, customer, o, timeout=90) for o in before + during + after]
    assert {o["status"] for o in orders} == {"ORDER_STATUS_CONFIRMED"}, orders
    eventually(lambda: stock_of(api, product["id"]) == 100 - len(orders), timeout=30)
    # the read model heard of every order too
    placed = {o["id"] for o in orders}
    eventually(lambda: confirmed_in_list(api, customer) == placed, timeout=30)


def test_services_restarted_while_redis_is_down_serve_and_catch_up(
    api: httpx.Client, admin: User, customer: User, stack: Stack
) -> None:
    """product_service and order_service start without Redis: they serve, their commands
    commit, and their consumers start once Redis is back, so every order ends."""
    assert stack.redis is not None, "the end-to-end stack runs its own Redis"
    product = create_product(api, admin, stock=100)
    services = ("product_service", "order_service")
    stack.redis.stop()
    try:
        stack.stop(services)
        stack.start(services)
        stack.wait_ready(timeout=60)
        placed = [submit_order(api, customer, product["id"]) for _ in range(5)]
        assert {o["status"] for o in placed} == {"ORDER_STATUS_PENDING"}
    finally:
        stack.redis.start()
    orders = [wait_terminal(api, customer, o["id"], timeout=90) for o in placed]
    assert {o["status"] for o in orders} == {"ORDER_STATUS_CONFIRMED"}, orders
    eventually(lambda: stock_of(api, product["id"]) == 100 - len(orders), timeout=30)


def confirmed_in_list(api: httpx.Client, customer: User) -> set[str]:
    response = api.get("/v1/orders", headers=customer.headers, params={"page_size": 50})
    assert response.status_code == 200, response.text
    return {o["id"] for o in response.json()["orders"] if o["status"] == "ORDER_STATUS_CONFIRMED"}
