"""GetOrder, ListOrders (from the read model) and CancelOrder over fakes: who may see and
cancel what, and what a cancellation gives back; CreateOrder sent again with its request_id."""

from __future__ import annotations

import grpc
import pytest
from order_service.domain.errors import OrderNotFound
from order_service.domain.model import OrderStatus, PaymentStatus
from order_service.domain.saga import SagaStep
from order_service.service_layer import read_model
from tienda_platform.errors import AlreadyExists, FailedPrecondition, InvalidArgument
from tienda_platform.ids import new_id

from .fakes import World, customer, wait_until

pytestmark = pytest.mark.unit


async def test_the_owner_and_an_admin_get_an_order(world: World) -> None:
    buyer = customer()
    order = await world.create(buyer)
    assert await world.get(buyer, order.id) == order
    assert await world.get(customer("admin"), order.id) == order


async def test_another_customer_gets_not_found_as_for_a_missing_order(world: World) -> None:
    order = await world.create(customer())
    with pytest.raises(OrderNotFound) as other:
        await world.get(customer(), order.id)
    missing = new_id()
    with pytest.raises(OrderNotFound) as absent:
        await world.get(customer(), missing)
    assert other.value.code is grpc.StatusCode.NOT_FOUND
    assert other.value.message == f"order {order.id} not found"
    assert absent.value.message == f"order {missing} not found"


@pytest.mark.parametrize("bad_id", ["", "42", "x" * 1_000_000])
async def test_a_malformed_id_is_an_invalid_argument(world: World, bad_id: str) -> None:
    with pytest.raises(InvalidArgument):
        await world.get(customer(), bad_id)
    with pytest.raises(InvalidArgument):
        await world.cancel(customer(), bad_id)


async def test_a_customer_lists_their_own_orders_newest_first_page_by_page(world: World) -> None:
    buyer, other = customer(), customer()
    mine = [(await world.create(buyer, items=[(world.mug, 1)])).id for _ in range(5)]
    await world.create(other, items=[(world.mug, 1)])

    seen: list[str] = []
    token = ""
    for _ in range(5):
        page = await world.list(buyer, page_size=2, page_token=token)
        assert len(page.orders) <= 2
        seen += [o.order_id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(mine))


async def test_the_list_shows_what_get_shows(world: World) -> None:
    buyer = customer()
    order = await world.create(buyer)
    (summary,) = (await world.list(buyer)).orders
    assert (summary.status, summary.status_reason, summary.total_cents) == (
        order.status,
        order.status_reason,
        order.total_cents,
    )
    assert summary.lines == order.lines
    assert (summary.create_time, summary.update_time) == (order.create_time, order.update_time)


async def test_the_list_is_the_read_model_and_lags_until_events_arrive(world: World) -> None:
    buyer = customer()
    await world.place(buyer)
    unprojected = await read_model.list_orders(
        page_size=0, page_token="", principal=buyer, uow=world.uow()
    )
    assert unprojected.orders == []
    assert len((await world.list(buyer)).orders) == 1


async def test_an_admin_lists_every_order(world: World) -> None:
    ids = {(await world.create(customer(), items=[(world.mug, 1)])).id for _ in range(3)}
    page = await world.list(customer("admin"))
    assert {o.order_id for o in page.orders} == ids
    assert page.next_page_token == ""


@pytest.mark.parametrize(
    ("page_size", "page_token", "field"),
    [(-1, "", "page_size"), (0, "garbage", "page_token"), (0, "x" * 1_000_000, "page_token")],
)
async def test_bad_paging_is_an_invalid_argument(
    world: World, page_size: int, page_token: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await world.list(customer(), page_size=page_size, page_token=page_token)
    assert [v.field for v in raised.value.violations] == [field]


async def test_cancelling_a_confirmed_order_releases_the_stock_and_refunds(world: World) -> None:
    buyer = customer()
    order = await world.create(buyer)
    assert world.catalog.stock(world.mug) == 8

    cancelled = await world.cancel(buyer, order.id)
    assert (cancelled.status, cancelled.status_reason) == (
        OrderStatus.CANCELLED,
        "cancelled by customer",
    )
    assert world.events_of(order.id)[-1] == "order.cancelled"
    await world.worker.drain()

    assert world.catalog.reservations[order.id].state == "released"
    assert (world.catalog.stock(world.mug), world.catalog.stock(world.tea)) == (10, 3)
    assert world.payments.refunds == [(f"ch_{order.id}:charge", 2999, f"{order.id}:refund")]
    assert [p.status for p in world.order(order.id).payments] == [
        PaymentStatus.APPROVED,
        PaymentStatus.REFUNDED,
    ]
    assert world.db.sagas[order.id].step is SagaStep.DONE


async def test_an_admin_cancels_anyones_order(world: World) -> None:
    order = await world.create(customer())
    cancelled = await world.cancel(customer("admin"), order.id)
    assert (cancelled.status, cancelled.status_reason) == (
        OrderStatus.CANCELLED,
        "cancelled by admin",
    )


async def test_another_customer_cannot_cancel_and_learns_nothing(world: World) -> None:
    order = await world.create(customer())
    with pytest.raises(OrderNotFound):
        await world.cancel(customer(), order.id)
    await world.worker.drain()
    assert world.order(order.id).status is OrderStatus.CONFIRMED
    assert world.catalog.reservations[order.id].state == "committed"
    assert world.payments.refunds == []


@pytest.mark.parametrize(
    ("token", "quantity", "message"),
    [
        ("tok_declined", 1, "order is already cancelled"),
        ("tok_ok", 99, "order is already rejected"),
    ],
)
async def test_an_ended_order_cannot_be_cancelled(
    world: World, token: str, quantity: int, message: str
) -> None:
    buyer = customer()
    order = await world.create(buyer, token, items=[(world.mug, quantity)])
    events_before = list(world.db.events)

    with pytest.raises(FailedPrecondition, match=message):
        await world.cancel(buyer, order.id)
    assert world.order(order.id) == order
    assert world.db.events == events_before


async def test_cancelling_a_pending_order_gives_back_whatever_the_saga_took(world: World) -> None:
    buyer = customer()
    order = await world.place(buyer)

    cancelled = await world.cancel(buyer, order.id)
    assert cancelled.status is OrderStatus.CANCELLED
    await world.worker.drain()

    # the saga never reserved: its give-back step still releases (a tombstone for a late
    # reservation), and charges nothing
    assert world.catalog.calls == ["batch_get_products", "release_stock"]
    assert world.payments.charges == []
    assert world.events_of(order.id) == ["order.created", "order.cancelled"]


async def test_a_cancel_while_product_service_is_down_is_done_at_once_and_given_back_later(
    world: World,
) -> None:
    buyer = customer()
    order = await world.create(buyer)
    world.catalog.unavailable = {"release_stock"}

    assert (await world.cancel(buyer, order.id)).status is OrderStatus.CANCELLED
    await world.worker.drain()
    assert world.catalog.reservations[order.id].state == "committed"
    assert world.db.sagas[order.id].attempts >= 1

    world.catalog.unavailable = set()

    async def released() -> bool:
        await world.worker.drain()
        return world.catalog.reservations[order.id].state == "released"

    await wait_until(released)
    assert len(world.payments.refunds) == 1


async def test_a_request_sent_again_with_its_request_id_gets_the_same_order(world: World) -> None:
    alice = customer()
    first = await world.place(alice, request_id="req-1")
    again = await world.place(alice, request_id="req-1")
    assert again.id == first.id
    assert [o.id for o in world.db.orders.values()] == [first.id]
    assert world.events_of(first.id) == ["order.created"]
    assert world.catalog.calls_of("batch_get_products") == 1  # the repeat: no catalog call

    # the order as it is now, not as it was first answered
    await world.worker.drain()
    assert (await world.place(alice, request_id="req-1")).status is OrderStatus.CONFIRMED


async def test_a_request_id_is_the_customers_own_and_not_for_another_request(
    world: World,
) -> None:
    alice, bob = customer(), customer()
    mine = await world.place(alice, request_id="req-1")
    theirs = await world.place(bob, request_id="req-1")
    assert theirs.id != mine.id
    with pytest.raises(AlreadyExists, match="request_id req-1 was already used") as reused:
        await world.place(alice, token="tok_declined", request_id="req-1")
    assert reused.value.code == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(AlreadyExists):
        await world.place(alice, items=[(world.mug, 1)], request_id="req-1")
    assert len(world.db.orders) == 2


@pytest.mark.parametrize("bad", ["has space", "x" * 65, "ünïcode", "semi;colon"])
async def test_a_malformed_request_id_is_an_invalid_argument(world: World, bad: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await world.place(customer(), request_id=bad)
    assert [v.field for v in caught.value.violations] == ["request_id"]
    assert world.db.orders == {}
