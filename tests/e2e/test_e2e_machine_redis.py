"""The whole system on the machine's Redis server (TIENDA_TEST_REDIS_URL, which .ci/run sets)
instead of the embedded one the other end-to-end tests start: the events of every order go
through it, in both saga modes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from e2e_support import (
    User,
    create_product,
    eventually,
    login,
    register,
    stock_of,
)
from tienda_contracts.topology import ORDER_EVENTS, PRODUCT_EVENTS
from tienda_devstack.stack import Ports, Stack

from .order_outcomes import (
    CONFIRMED,
    PAYMENT_DECLINED,
    out_of_stock,
    outcome,
    place_pending_order,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["orchestration", "choreography"])
def machine_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    # the test run's database on that server (a worker's own under pytest-xdist), emptied
    url = os.environ.get("TIENDA_TEST_REDIS_URL")
    if not url:
        pytest.skip("TIENDA_TEST_REDIS_URL is not set; .ci/run sets it")
    client = redis.Redis.from_url(url)
    client.flushdb()
    env = {
        "TIENDA_ENV": "test",
        "PAYMENT_TIMEOUT_SECONDS": "1",
        "ORDER_SAGA_MODE": request.param,
        "REDIS_URL": url,
    }
    try:
        with Stack(data_dir=tmp_path, ports=Ports.free(), env=env) as running:
            assert running.redis is None  # no embedded Redis: the machine's
            yield running
    finally:
        client.flushdb()
        client.close()


def test_orders_go_through_the_machines_redis(machine_stack: Stack) -> None:
    with httpx.Client(base_url=machine_stack.gateway_url, timeout=15.0) as api:
        token, refresh = login(api, machine_stack.admin.email, machine_stack.admin.password)
        admin = User("", machine_stack.admin.email, machine_stack.admin.password, token, refresh)
        customer = register(api)
        product = create_product(api, admin, stock=3)
        confirmed = place_pending_order(api, customer, product["id"], 2)
        declined = place_pending_order(api, customer, product["id"], 1, "tok_declined")
        rejected = place_pending_order(api, customer, product["id"], 5)
        assert [outcome(o) for o in (confirmed, declined, rejected)] == [
            CONFIRMED,
            PAYMENT_DECLINED,
            out_of_stock(product["sku"]),
        ]
        # the declined order's unit came back
        eventually(lambda: stock_of(api, product["id"]) == 1)
    client = redis.Redis.from_url(machine_stack.redis_url)
    try:
        assert client.xlen(ORDER_EVENTS) > 0 and client.xlen(PRODUCT_EVENTS) > 0
    finally:
        client.close()
