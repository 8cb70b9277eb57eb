"""The choreographed saga over fakes: order_service's reactions to product_service's events,
and the events those reactions publish."""

from __future__ import annotations

import pytest
from order_service.domain.model import OrderStatus, PaymentStatus, SagaMode
from order_service.domain.saga import SagaStep
from order_service.service_layer import choreography

from .fakes import World, customer

pytestmark = pytest.mark.unit


@pytest.fixture
def world() -> World:
    return World(mode=SagaMode.CHOREOGRAPHY, payment_timeout=0.01)


async def test_create_order_only_announces_the_order(world: World) -> None:
    order = await world.place(customer())

    assert order.status is OrderStatus.PENDING
    assert world.db.sagas == {}
    assert world.catalog.calls == ["batch_get_products"]
    (created,) = world.db.events
    assert (created.event_type, created.payload.saga_mode) == ("order.created", "choreography")


async def test_reserved_stock_and_an_approved_payment_confirm_the_order(world: World) -> None:
    order = await world.place(customer(), "tok_ok")
    await choreography.stock_reserved(uow=world.uow(), order_id=order.id)
    assert world.db.sagas[order.id].step is SagaStep.PAY
    await world.worker.drain()

    final = world.order(order.id)
    assert (final.status, final.status_reason) == (OrderStatus.CONFIRMED, "")
    assert world.events_of(order.id) == ["order.created", "payment.approved", "order.confirmed"]
    (approved,) = world.db.of_type("payment.approved")
    assert (approved.payload.order_id, approved.payload.amount_cents) == (order.id, 2999)
    (confirmed,) = world.db.of_type("order.confirmed")
    assert confirmed.payload.status == "ORDER_STATUS_CONFIRMED"
    # product_service commits on order.confirmed: order_service calls it for nothing
    assert world.catalog.calls == ["batch_get_products"]


@pytest.mark.parametrize(
    ("token", "reason"),
    [("tok_declined", "payment declined"), ("tok_timeout", "payment timed out")],
)
async def test_a_failed_payment_waits_for_the_released_stock_then_cancels(
    world: World, token: str, reason: str
) -> None:
    order = await world.place(customer(), token)
    await choreography.stock_reserved(uow=world.uow(), order_id=order.id)
    await world.worker.drain()

    assert world.order(order.id).status is OrderStatus.PENDING
    (declined,) = world.db.of_type("payment.declined")
    assert declined.payload.reason == reason

    await choreography.stock_released(uow=world.uow(), order_id=order.id)
    final = world.order(order.id)
    assert (final.status, final.status_reason) == (OrderStatus.CANCELLED, reason)
    assert world.events_of(order.id) == ["order.created", "payment.declined", "order.cancelled"]
    assert world.payments.refunds == []


async def test_rejected_stock_rejects_the_order_with_product_services_reason(
    world: World,
) -> None:
    order = await world.place(customer())
    await choreography.stock_rejected(
        uow=world.uow(), order_id=order.id, reason="insufficient stock for SKU-9"
    )

    final = world.order(order.id)
    assert (final.status, final.status_reason) == (
        OrderStatus.REJECTED,
        "insufficient stock for SKU-9",
    )
    assert world.events_of(order.id) == ["order.created", "order.rejected"]
    assert world.payments.charges == []


async def test_repeated_events_have_no_second_effect(world: World) -> None:
    paid = await world.place(customer(), "tok_ok")
    for _ in range(2):
        await choreography.stock_reserved(uow=world.uow(), order_id=paid.id)
        await world.worker.drain()
    declined = await world.place(customer(), "tok_declined")
    await choreography.stock_reserved(uow=world.uow(), order_id=declined.id)
    await world.worker.drain()
    rejected = await world.place(customer())
    for _ in range(2):
        await choreography.stock_released(uow=world.uow(), order_id=declined.id)
        await choreography.stock_rejected(uow=world.uow(), order_id=rejected.id, reason="none")

    assert len(world.payments.charges) == 2
    assert world.events_of(paid.id) == ["order.created", "payment.approved", "order.confirmed"]
    assert world.events_of(declined.id) == [
        "order.created",
        "payment.declined",
        "order.cancelled",
    ]
    assert world.events_of(rejected.id) == ["order.created", "order.rejected"]


async def test_stock_events_of_orchestrated_orders_are_ignored() -> None:
    world = World(mode=SagaMode.ORCHESTRATION)
    order = await world.place(customer())
    await choreography.stock_rejected(uow=world.uow(), order_id=order.id, reason="nope")
    await choreography.stock_reserved(uow=world.uow(), order_id=order.id)
    assert world.order(order.id).status is OrderStatus.PENDING
    assert world.db.sagas[order.id].step is SagaStep.RESERVE
    assert world.events_of(order.id) == ["order.created"]


async def test_stock_released_for_an_order_whose_payment_did_not_fail_is_ignored(
    world: World,
) -> None:
    order = await world.place(customer())
    await choreography.stock_released(uow=world.uow(), order_id=order.id)
    assert world.order(order.id).status is OrderStatus.PENDING


async def test_cancelling_a_confirmed_order_refunds_and_leaves_the_stock_to_the_event(
    world: World,
) -> None:
    buyer = customer()
    order = await world.place(buyer, "tok_ok")
    await choreography.stock_reserved(uow=world.uow(), order_id=order.id)
    await world.worker.drain()

    cancelled = await world.cancel(buyer, order.id)
    assert cancelled.status is OrderStatus.CANCELLED
    await world.worker.drain()

    assert world.payments.refunds == [(f"ch_{order.id}:charge", 2999, f"{order.id}:refund")]
    assert [p.status for p in world.order(order.id).payments] == [
        PaymentStatus.APPROVED,
        PaymentStatus.REFUNDED,
    ]
    assert "release_stock" not in world.catalog.calls  # product_service hears order.cancelled
    assert world.events_of(order.id)[-1] == "order.cancelled"


async def test_stock_reserved_after_a_cancellation_charges_nothing(world: World) -> None:
    buyer = customer()
    order = await world.place(buyer)
    await world.cancel(buyer, order.id)
    await choreography.stock_reserved(uow=world.uow(), order_id=order.id)
    await world.worker.drain()

    assert world.payments.charges == []
    assert world.db.sagas == {}
    assert world.events_of(order.id) == ["order.created", "order.cancelled"]
