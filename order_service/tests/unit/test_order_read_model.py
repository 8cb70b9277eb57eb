"""The read model over fakes: summaries built from events only, merged so that late, repeated
or reordered events never move an order back, and named after the customer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from order_service.domain.customers import ANONYMOUS_NAME
from order_service.domain.model import OrderLine, OrderStatus
from order_service.domain.summary import OrderSummary
from order_service.service_layer import read_model
from tienda_platform.auth import Principal
from tienda_platform.ids import new_id

from .fakes import World

pytestmark = pytest.mark.unit

T0 = datetime(2026, 5, 1, tzinfo=UTC)
LINES = [OrderLine(new_id(), "Mug", 2, 1250)]


async def created(world: World, order_id: str, customer_id: str, at: datetime = T0) -> None:
    await read_model.order_created(
        uow=world.uow(),
        order_id=order_id,
        customer_id=customer_id,
        lines=LINES,
        total_cents=2500,
        event_time=at,
    )


async def status(
    world: World, order_id: str, customer_id: str, new: OrderStatus, reason: str, at: datetime
) -> None:
    await read_model.order_status_changed(
        uow=world.uow(),
        order_id=order_id,
        customer_id=customer_id,
        status=new,
        reason=reason,
        total_cents=2500,
        event_time=at,
    )


async def listed(world: World, customer_id: str) -> list[OrderSummary]:
    page = await read_model.list_orders(
        page_size=0,
        page_token="",
        principal=Principal(user_id=customer_id, role="customer", token="t"),
        uow=world.uow(),
    )
    return page.orders


async def test_an_order_is_listed_from_its_events(world: World) -> None:
    order_id, user = new_id(), new_id()
    await created(world, order_id, user)
    await status(world, order_id, user, OrderStatus.CONFIRMED, "", T0 + timedelta(seconds=1))

    (summary,) = await listed(world, user)
    assert (summary.order_id, summary.status, summary.total_cents) == (
        order_id,
        OrderStatus.CONFIRMED,
        2500,
    )
    assert summary.lines == LINES
    assert (summary.create_time, summary.update_time) == (T0, T0 + timedelta(seconds=1))


async def test_late_and_repeated_events_never_move_an_order_back(world: World) -> None:
    order_id, user = new_id(), new_id()
    cancelled_at = T0 + timedelta(seconds=2)
    await status(
        world, order_id, user, OrderStatus.CANCELLED, "cancelled by customer", cancelled_at
    )
    await status(world, order_id, user, OrderStatus.CONFIRMED, "", T0 + timedelta(seconds=1))
    await created(world, order_id, user)
    await created(world, order_id, user)

    (summary,) = await listed(world, user)
    assert (summary.status, summary.status_reason) == (
        OrderStatus.CANCELLED,
        "cancelled by customer",
    )
    assert (summary.lines, summary.create_time, summary.update_time) == (LINES, T0, cancelled_at)


async def test_summaries_show_the_newest_name_and_forget_deleted_customers(world: World) -> None:
    user = new_id()
    await created(world, new_id(), user)
    assert [s.customer_name for s in await listed(world, user)] == [""]

    await read_model.customer_named(
        uow=world.uow(), customer_id=user, full_name="Ada", event_time=T0
    )
    await created(world, new_id(), user)
    await read_model.customer_named(
        uow=world.uow(), customer_id=user, full_name="Old", event_time=T0 - timedelta(seconds=1)
    )
    assert [s.customer_name for s in await listed(world, user)] == ["Ada", "Ada"]

    await read_model.customer_forgotten(uow=world.uow(), customer_id=user, event_time=T0)
    await read_model.customer_named(
        uow=world.uow(), customer_id=user, full_name="Back", event_time=T0 + timedelta(days=1)
    )
    assert [s.customer_name for s in await listed(world, user)] == [ANONYMOUS_NAME] * 2
