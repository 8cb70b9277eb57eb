"""The orchestrated saga over fakes: CreateOrder answers PENDING, the worker drives reserve,
pay, then commit or compensate, from the saga log."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from order_service.domain.errors import ProductNotFound
from order_service.domain.model import OrderStatus, PaymentStatus
from order_service.domain.saga import SagaStep
from order_service.service_layer.order_saga import COMMIT_FAILED
from prometheus_client import REGISTRY
from tienda_platform.errors import InvalidArgument, Unavailable
from tienda_platform.ids import new_id

from .fakes import World, customer, wait_until

pytestmark = pytest.mark.unit


def outcomes(status: str, reason: str, mode: str = "orchestration") -> float:
    labels = {"mode": mode, "status": status, "reason": reason}
    return REGISTRY.get_sample_value("tienda_saga_outcomes_total", labels) or 0.0


async def test_create_order_answers_pending_and_only_stores_the_order_and_its_saga(
    world: World,
) -> None:
    buyer = customer()
    order = await world.place(buyer)

    assert (order.status, order.status_reason) == (OrderStatus.PENDING, "")
    assert world.catalog.calls == ["batch_get_products"]
    assert world.catalog.tokens == [buyer.token]  # the caller's token, for reading products
    assert world.db.sagas[order.id].step is SagaStep.RESERVE
    assert world.events_of(order.id) == ["order.created"]
    created = world.db.events[0].payload
    assert (created.customer_id, created.total_cents, created.saga_mode) == (
        buyer.user_id,
        2 * 1250 + 499,
        "orchestration",
    )
    assert [(li.product_name, li.quantity, li.unit_price_cents) for li in created.lines] == [
        ("Mug", 2, 1250),
        ("Tea", 1, 499),
    ]
    assert world.order(order.id).create_time == world.db.events[0].time


async def test_an_approved_payment_confirms_the_order_and_commits_the_stock(world: World) -> None:
    confirmed_before = outcomes("confirmed", "none")
    order = await world.create(customer(), "tok_ok")

    assert (order.status, order.status_reason) == (OrderStatus.CONFIRMED, "")
    assert world.catalog.reservations[order.id].state == "committed"
    assert (world.catalog.stock(world.mug), world.catalog.stock(world.tea)) == (8, 2)
    assert world.payments.charges == [("tok_ok", 2999, f"{order.id}:charge")]
    assert [p.status for p in order.payments] == [PaymentStatus.APPROVED]
    assert world.events_of(order.id) == ["order.created", "payment.approved", "order.confirmed"]
    assert world.db.sagas[order.id].step is SagaStep.DONE
    assert world.db.sagas[order.id].next_attempt_time is None
    assert outcomes("confirmed", "none") == confirmed_before + 1


async def test_the_snapshot_keeps_the_price_the_order_was_placed_at(world: World) -> None:
    order = await world.create(customer())
    world.catalog.products[world.mug].price_cents = 9999
    world.catalog.products[world.mug].name = "Renamed"
    stored = world.order(order.id)
    assert (stored.lines[0].product_name, stored.lines[0].unit_price_cents) == ("Mug", 1250)


@pytest.mark.parametrize("token", ["tok_declined", "tok_unknown"])
async def test_a_declined_payment_cancels_the_order_and_releases_the_stock(
    world: World, token: str
) -> None:
    before = outcomes("cancelled", "declined")
    order = await world.create(customer(), token)

    assert (order.status, order.status_reason) == (OrderStatus.CANCELLED, "payment declined")
    assert world.catalog.reservations[order.id].state == "released"
    assert (world.catalog.stock(world.mug), world.catalog.stock(world.tea)) == (10, 3)
    assert [p.status for p in order.payments] == [PaymentStatus.DECLINED]
    assert world.payments.refunds == []
    assert world.events_of(order.id) == ["order.created", "payment.declined", "order.cancelled"]
    (declined,) = world.db.of_type("payment.declined")
    assert declined.payload.reason == "payment declined"
    assert outcomes("cancelled", "declined") == before + 1


async def test_a_payment_that_never_answers_times_out_and_cancels_the_order() -> None:
    world = World(payment_timeout=0.01)
    order = await world.create(customer(), "tok_timeout")

    assert (order.status, order.status_reason) == (OrderStatus.CANCELLED, "payment timed out")
    assert world.catalog.reservations[order.id].state == "released"
    assert world.catalog.stock(world.mug) == 10
    assert [p.status for p in order.payments] == [PaymentStatus.TIMED_OUT]
    (declined,) = world.db.of_type("payment.declined")
    assert declined.payload.reason == "payment timed out"


async def test_not_enough_stock_rejects_the_order_without_charging(world: World) -> None:
    before = outcomes("rejected", "insufficient_stock")
    order = await world.create(customer(), items=[(world.mug, 1), (world.tea, 4)])

    assert (order.status, order.status_reason) == (
        OrderStatus.REJECTED,
        "insufficient stock for Tea",
    )
    assert world.payments.charges == []
    assert (world.catalog.stock(world.mug), world.catalog.stock(world.tea)) == (10, 3)
    assert world.events_of(order.id) == ["order.created", "order.rejected"]
    (rejected,) = world.db.of_type("order.rejected")
    assert (rejected.payload.status, rejected.payload.reason) == (
        "ORDER_STATUS_REJECTED",
        "insufficient stock for Tea",
    )
    assert outcomes("rejected", "insufficient_stock") == before + 1


async def test_an_unknown_product_is_not_found_and_nothing_is_stored(world: World) -> None:
    missing = new_id()
    with pytest.raises(ProductNotFound, match=f"product {missing} not found") as raised:
        await world.place(customer(), items=[(world.mug, 1), (missing, 1)])
    assert raised.value.code is grpc.StatusCode.NOT_FOUND
    assert (world.db.orders, world.db.sagas, world.db.events) == ({}, {}, [])


async def test_an_invalid_request_calls_no_one_and_stores_nothing(world: World) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.place(customer(), "", items=[(world.mug, 0)])
    assert {v.field for v in raised.value.violations} == {"items[0].quantity", "payment_token"}
    assert world.catalog.calls == []
    assert world.db.orders == {}


async def test_product_service_down_before_the_order_exists_stores_nothing(world: World) -> None:
    world.catalog.unavailable = {"batch_get_products"}
    with pytest.raises(Unavailable):
        await world.place(customer())
    assert (world.db.orders, world.db.events) == ({}, [])


async def test_product_service_down_delays_the_order_and_never_fails_it(world: World) -> None:
    world.catalog.unavailable = {"reserve_stock"}
    order = await world.place(customer())

    async def retried_three_times() -> bool:
        await world.worker.drain()
        return world.db.sagas[order.id].attempts >= 3

    await wait_until(retried_three_times)
    saga = world.db.sagas[order.id]
    assert world.order(order.id).status is OrderStatus.PENDING
    assert (saga.step, saga.claimed_by) == (SagaStep.RESERVE, "")
    assert "product service unavailable" in saga.last_error
    assert world.payments.charges == []

    world.catalog.unavailable = set()

    async def confirmed() -> bool:
        await world.worker.drain()
        return world.order(order.id).status is OrderStatus.CONFIRMED

    await wait_until(confirmed)
    assert world.db.sagas[order.id].attempts == 0
    assert world.events_of(order.id).count("order.confirmed") == 1


async def test_a_refused_commit_gives_the_stock_and_the_money_back(world: World) -> None:
    world.catalog.refuse_commit = True
    order = await world.create(customer())

    assert (order.status, order.status_reason) == (OrderStatus.CANCELLED, COMMIT_FAILED)
    assert world.catalog.reservations[order.id].state == "released"
    assert world.payments.refunds == [(f"ch_{order.id}:charge", 2999, f"{order.id}:refund")]
    assert [p.status for p in order.payments] == [PaymentStatus.APPROVED, PaymentStatus.REFUNDED]
    assert world.events_of(order.id) == ["order.created", "payment.approved", "order.cancelled"]


async def test_an_order_cancelled_while_paying_gets_its_payment_back(world: World) -> None:
    buyer = customer()
    order = await world.place(buyer, "tok_gated")
    draining = asyncio.create_task(world.worker.drain())
    await asyncio.wait_for(world.payments.charge_started.wait(), 5)

    cancelled = await world.cancel(buyer, order.id)
    assert (cancelled.status, cancelled.status_reason) == (
        OrderStatus.CANCELLED,
        "cancelled by customer",
    )
    world.payments.gate.set()
    await asyncio.wait_for(draining, 5)

    final = world.order(order.id)
    assert (final.status, final.status_reason) == (OrderStatus.CANCELLED, "cancelled by customer")
    assert world.payments.refunds == [(f"ch_{order.id}:charge", 2999, f"{order.id}:refund")]
    assert [p.status for p in final.payments] == [PaymentStatus.APPROVED, PaymentStatus.REFUNDED]
    assert world.catalog.reservations[order.id].state == "released"
    assert world.catalog.stock(world.mug) == 10
    # the charge that landed after the cancellation is refunded, never announced
    assert world.events_of(order.id) == ["order.created", "order.cancelled"]
    assert world.db.sagas[order.id].step is SagaStep.DONE


async def test_a_saga_claimed_by_a_live_worker_is_left_to_it(world: World) -> None:
    order = await world.place(customer(), "tok_gated")
    first = asyncio.create_task(world.worker.drain())
    await asyncio.wait_for(world.payments.charge_started.wait(), 5)

    other = world.new_worker("worker-2")
    await other.drain()  # nothing is due: the saga is claimed until its lease ends
    assert world.db.sagas[order.id].claimed_by == "worker-1"

    world.payments.gate.set()
    await asyncio.wait_for(first, 5)
    assert world.order(order.id).status is OrderStatus.CONFIRMED
    assert len(world.payments.charges) == 1
