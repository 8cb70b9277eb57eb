"""Two replicas of each gRPC service on one PostgreSQL database per service, as a Deployment
with `replicas: 2` runs them, in both saga modes.

The replicas start together (their migrations take turns), the gateway and order_service
spread their calls over both replicas of what they call, fifty customers ordering the last
ten units across them sell exactly ten, and one replica of order_service and one of
product_service stopped gracefully under load (SIGTERM, as a rolling update sends it) lose
no request, no order and no stock: calls go to the replica left.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from e2e_support import (
    User,
    create_product,
    eventually,
    register,
    sign_in,
    stock_of,
    submit_order,
    wait_terminal,
)
from prometheus_client.parser import text_string_to_metric_families
from tienda_devstack.stack import Stack

from .order_outcomes import CONFIRMED, PAYMENT_DECLINED, out_of_stock, outcome

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

REPLICATED = ("auth_service", "product_service", "order_service")


def calls_answered(stack: Stack, replica: str) -> float:
    """The calls of its own service (not health checks) a replica answered, from its
    /metrics."""
    text = httpx.get(f"http://127.0.0.1:{stack.metrics_port(replica)}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "grpc_server_handled"
        for sample in family.samples
        if sample.name == "grpc_server_handled_total"
        and sample.labels["grpc_service"].split(".")[0] in ("auth", "product", "order")
    )


def test_replicas_share_the_calls_and_a_graceful_stop_loses_nothing(
    replicated_stack: Stack,
) -> None:
    stack = replicated_stack
    with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as api:
        admin = sign_in(api, stack.admin.email, stack.admin.password)
        last_ten_units_sell_once_across_replicas(api, admin, stack)
        a_replica_stopped_under_load_loses_nothing(api, admin, stack)


def replica_names(service: str) -> tuple[str, str]:
    return service, f"{service}-2"


def every_replica_answers(api: httpx.Client, admin: User, stack: Stack) -> None:
    """Calls until each replica has answered some: a channel connects to a replica that was
    not up yet when it started after a backoff of its own."""
    product = create_product(api, admin, stock=1_000)

    def all_answered() -> bool:
        submit_order(api, register(api, "Warm Up"), product["id"])
        return all(
            calls_answered(stack, replica) > 0
            for service in REPLICATED
            for replica in replica_names(service)
        )

    eventually(all_answered, timeout=60)


def last_ten_units_sell_once_across_replicas(api: httpx.Client, admin: User, stack: Stack) -> None:
    every_replica_answers(api, admin, stack)
    before = {
        replica: calls_answered(stack, replica)
        for service in REPLICATED
        for replica in replica_names(service)
    }
    product = create_product(api, admin, stock=10)
    customers = [register(api, f"Replica Buyer{number}") for number in range(50)]

    def place(customer: User) -> dict:
        order = submit_order(api, customer, product["id"])
        return wait_terminal(api, customer, order["id"], timeout=60)

    with ThreadPoolExecutor(max_workers=25) as pool:
        orders = list(pool.map(place, customers))
    outcomes = [outcome(order) for order in orders]
    assert outcomes.count(CONFIRMED) == 10
    assert outcomes.count(out_of_stock(product["sku"])) == 40
    assert stock_of(api, product["id"]) == 0

    # the calls to each service (the gateway's, and order_service's to product_service)
    # went to its replicas in turn: each answered a fair share of them
    for service in REPLICATED:
        answered = {
            replica: calls_answered(stack, replica) - before[replica]
            for replica in replica_names(service)
        }
        assert min(answered.values()) >= 0.25 * sum(answered.values()), answered


def a_replica_stopped_under_load_loses_nothing(
    api: httpx.Client, admin: User, stack: Stack
) -> None:
    stock = 1_000
    product = create_product(api, admin, stock=stock)
    customers = [register(api, f"Rolling Customer{number}") for number in range(4)]
    placed: list[tuple[User, str, str]] = []  # customer, payment token, order id
    failures: list[str] = []
    stopping = threading.Event()
    lock = threading.Lock()

    def place_orders(customer: User) -> None:
        with httpx.Client(base_url=stack.gateway_url, timeout=30.0) as client:
            number = 0
            while not stopping.is_set():
                payment = "tok_declined" if number % 3 == 2 else "tok_ok"
                number += 1
                try:
                    response = client.post(
                        "/v1/orders",
                        headers=customer.headers,
                        json={
                            "items": [{"product_id": product["id"], "quantity": 1}],
                            "payment_token": payment,
                        },
                    )
                except httpx.TransportError as error:
                    failures.append(repr(error))
                    continue
                if response.status_code != 200:
                    failures.append(f"{response.status_code} {response.text}")
                    continue
                with lock:
                    placed.append((customer, payment, response.json()["id"]))

    def placed_count() -> int:
        with lock:
            return len(placed)

    threads = [threading.Thread(target=place_orders, args=(c,), daemon=True) for c in customers]
    for thread in threads:
        thread.start()
    try:
        answered = calls_answered(stack, "order_service-2")
        eventually(lambda: placed_count() >= 20, timeout=60)
        before = placed_count()
        # the replica to stop was taking its share of the orders
        assert calls_answered(stack, "order_service-2") > answered
        # a rolling update's SIGTERM: NOT_SERVING, in-flight calls drain, the process ends
        stopping_replicas = ("order_service-2", "product_service-2")
        processes = [stack.processes[name] for name in stopping_replicas]
        stack.stop(stopping_replicas, timeout=30)
        # each ended by itself, cleanly (stop kills what is left after its timeout)
        assert [process.returncode for process in processes] == [0, 0]
        eventually(lambda: placed_count() >= before + 20, timeout=60)
    finally:
        stopping.set()
        for thread in threads:
            thread.join(timeout=60)
    assert failures == []

    # every order ends as its payment decides, and the stock adds up
    for customer, payment, order_id in placed:
        ended = wait_terminal(api, customer, order_id, timeout=90)
        assert outcome(ended) == (CONFIRMED if payment == "tok_ok" else PAYMENT_DECLINED), ended
    confirmed = sum(1 for _, payment, _ in placed if payment == "tok_ok")
    eventually(lambda: stock_of(api, product["id"]) == stock - confirmed, timeout=60)
