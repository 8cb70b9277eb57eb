"""The customer snapshot over fakes: kept from user events, newest wins, and a deleted user's
pending orders are cancelled while the others keep an anonymised name."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from order_service.domain.customers import ANONYMOUS_NAME, anonymous_email
from order_service.domain.model import OrderStatus
from order_service.domain.saga import SagaStep
from order_service.service_layer import customers
from prometheus_client import REGISTRY
from tienda_platform.errors import FailedPrecondition

from .fakes import World, customer

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)


async def named(world: World, user_id: str, name: str, at: datetime, email: str = "") -> None:
    await customers.customer_changed(
        uow=world.uow(),
        customer_id=user_id,
        email=email or f"{user_id}@x.io",
        full_name=name,
        event_time=at,
    )


async def test_orders_show_the_newest_name_and_email_heard(world: World) -> None:
    buyer = customer()
    await named(world, buyer.user_id, "Ada", T0)
    order = await world.create(buyer)
    assert (order.customer_name, order.customer_email) == ("Ada", f"{buyer.user_id}@x.io")

    await named(world, buyer.user_id, "Ada Lovelace", T0 + timedelta(seconds=2), "ada@l.io")
    await named(world, buyer.user_id, "Stale", T0 + timedelta(seconds=1))  # arrived late
    again = await world.get(buyer, order.id)
    assert (again.customer_name, again.customer_email) == ("Ada Lovelace", "ada@l.io")
    assert world.db.customers[buyer.user_id].email == "ada@l.io"


async def test_an_unknown_customer_has_no_name_yet(world: World) -> None:
    buyer = customer()
    order = await world.place(buyer)
    assert (order.customer_name, order.customer_email) == ("", "")
    again = await world.get(buyer, order.id)
    assert (again.customer_name, again.customer_email) == ("", "")


async def test_deleting_a_user_cancels_their_pending_orders_and_anonymises_the_rest(
    world: World,
) -> None:
    buyer, other = customer(), customer()
    await named(world, buyer.user_id, "Grace", T0)
    confirmed = await world.create(buyer)
    world.catalog.unavailable = {"reserve_stock"}
    pending = await world.place(buyer)
    await world.worker.drain()  # its reservation keeps failing: it stays PENDING
    others = await world.place(other)
    before = (
        REGISTRY.get_sample_value(
            "tienda_saga_outcomes_total",
            {"mode": "orchestration", "status": "cancelled", "reason": "customer_deleted"},
        )
        or 0.0
    )

    await customers.customer_deleted(
        uow=world.uow(), customer_id=buyer.user_id, event_time=T0 + timedelta(seconds=5)
    )

    cancelled = world.order(pending.id)
    assert (cancelled.status, cancelled.status_reason) == (
        OrderStatus.CANCELLED,
        "customer deleted",
    )
    assert world.events_of(pending.id) == ["order.created", "order.cancelled"]
    assert world.db.sagas[pending.id].step is SagaStep.GIVE_BACK
    assert world.order(confirmed.id).status is OrderStatus.CONFIRMED
    assert world.order(others.id).status is OrderStatus.PENDING
    snapshot = world.db.customers[buyer.user_id]
    assert (snapshot.full_name, snapshot.email, snapshot.deleted) == (
        ANONYMOUS_NAME,
        anonymous_email(buyer.user_id),
        True,
    )
    assert (await world.get(buyer, confirmed.id)).customer_name == ANONYMOUS_NAME
    after = REGISTRY.get_sample_value(
        "tienda_saga_outcomes_total",
        {"mode": "orchestration", "status": "cancelled", "reason": "customer_deleted"},
    )
    assert after == before + 1

    world.catalog.unavailable = set()
    await world.worker.drain()
    assert world.catalog.reservations[pending.id].state == "released"
    assert f"{pending.id}:charge" not in [key for _, _, key in world.payments.charges]


async def test_a_deletion_is_final_and_repeating_it_changes_nothing(world: World) -> None:
    buyer = customer()
    await named(world, buyer.user_id, "Grace", T0)
    order = await world.place(buyer)
    for _ in range(2):
        await customers.customer_deleted(
            uow=world.uow(), customer_id=buyer.user_id, event_time=T0 + timedelta(seconds=1)
        )
    await named(world, buyer.user_id, "Back again", T0 + timedelta(seconds=9))

    assert world.db.customers[buyer.user_id].full_name == ANONYMOUS_NAME
    assert world.events_of(order.id) == ["order.created", "order.cancelled"]
    with pytest.raises(FailedPrecondition, match="deleted"):
        await world.place(buyer)


async def test_a_deletion_heard_before_anything_else_still_anonymises(world: World) -> None:
    buyer = customer()
    await customers.customer_deleted(uow=world.uow(), customer_id=buyer.user_id, event_time=T0)
    await named(world, buyer.user_id, "Late registration", T0 - timedelta(seconds=1))
    snapshot = world.db.customers[buyer.user_id]
    assert (snapshot.full_name, snapshot.deleted) == (ANONYMOUS_NAME, True)
