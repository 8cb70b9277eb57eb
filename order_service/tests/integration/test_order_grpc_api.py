"""order.v1.OrderService over a real grpc.aio server, database, Redis and token verification.

product_service is a fake catalogue; payments are the simulated provider with a short timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from order.v1 import order_pb2
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint

from ..unit.fakes import FakeProductCatalog, wait_until
from .running_order_service import RunningOrderService, run_order_service

pytestmark = pytest.mark.integration

MUG, TEA = new_id(), new_id()


class Api(RunningOrderService):
    async def place_two(
        self, user_id: str, token: str = "tok_ok", quantity: int = 2
    ) -> order_pb2.Order:
        return await self.place(user_id, token, [(MUG, quantity), (TEA, 1)])


@pytest.fixture
async def api(
    database_url: str, redis_url: str, token_mint: TokenMint, tmp_path: Path
) -> AsyncIterator[Api]:
    catalog = FakeProductCatalog()
    catalog.add(MUG, name="Mug", price_cents=1250, stock=10)
    catalog.add(TEA, name="Tea", price_cents=499, stock=5)
    async with run_order_service(
        database_url=database_url,
        redis_url=redis_url,
        mint=token_mint,
        catalog=catalog,
        saga_mode="orchestration",
        scratch=tmp_path,
    ) as running:
        yield Api(running.app, running.stub, running.catalog, running.mint)


def field_violations(error: grpc.aio.AioRpcError) -> set[str]:
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return {v.field for v in bad_request.field_violations}


async def test_create_get_list_and_cancel(api: Api) -> None:
    alice = new_id()
    placed = await api.place_two(alice)
    assert (placed.status, placed.status_reason) == (order_pb2.ORDER_STATUS_PENDING, "")
    assert placed.customer_id == alice
    assert placed.total_cents == 2 * 1250 + 499
    assert [(i.product_name, i.quantity, i.unit_price_cents) for i in placed.items] == [
        ("Mug", 2, 1250),
        ("Tea", 1, 499),
    ]
    assert placed.create_time.seconds > 0

    order = await api.ended(placed.id, alice)
    assert order.status == order_pb2.ORDER_STATUS_CONFIRMED
    assert order.create_time == placed.create_time
    assert api.catalog.stock(MUG) == 8

    second = await api.ended((await api.place_two(alice, quantity=1)).id, alice)

    async def both_listed_as_they_ended() -> bool:
        return await api.listed(alice) == [second, order]

    await wait_until(both_listed_as_they_ended, within=15)
    listed = await api.stub.ListOrders(
        order_pb2.ListOrdersRequest(page_size=1), metadata=api.auth(alice)
    )
    assert list(listed.orders) == [second]
    rest = await api.stub.ListOrders(
        order_pb2.ListOrdersRequest(page_size=1, page_token=listed.next_page_token),
        metadata=api.auth(alice),
    )
    assert list(rest.orders) == [order]
    assert rest.next_page_token == ""

    cancelled = await api.stub.CancelOrder(
        order_pb2.CancelOrderRequest(id=order.id), metadata=api.auth(alice)
    )
    assert cancelled.status == order_pb2.ORDER_STATUS_CANCELLED
    assert cancelled.status_reason == "cancelled by customer"
    await wait_until(lambda: api.catalog.stock(MUG) == 9)  # the second order still holds one
    with pytest.raises(grpc.aio.AioRpcError) as again:
        await api.stub.CancelOrder(
            order_pb2.CancelOrderRequest(id=order.id), metadata=api.auth(alice)
        )
    assert again.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert again.value.details() == "order is already cancelled"


async def test_unknown_products_are_not_found_and_nothing_is_stored(api: Api) -> None:
    missing = new_id()
    request = order_pb2.CreateOrderRequest(
        items=[order_pb2.OrderItemRequest(product_id=missing, quantity=1)], payment_token="tok_ok"
    )
    user = new_id()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.CreateOrder(request, metadata=api.auth(user))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert raised.value.details() == f"product {missing} not found"
    assert api.catalog.calls == ["batch_get_products"]


async def test_another_customer_sees_not_found_and_an_admin_sees_the_order(api: Api) -> None:
    owner = new_id()
    order = await api.ended((await api.place_two(owner)).id, owner)
    for call, request in [
        (api.stub.GetOrder, order_pb2.GetOrderRequest(id=order.id)),
        (api.stub.CancelOrder, order_pb2.CancelOrderRequest(id=order.id)),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, metadata=api.auth(new_id()))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    admin = new_id()
    assert (
        await api.stub.GetOrder(
            order_pb2.GetOrderRequest(id=order.id), metadata=api.auth(admin, "admin")
        )
    ) == order

    async def admin_sees_it() -> bool:
        return [o.id for o in await api.listed(admin, "admin")] == [order.id]

    await wait_until(admin_sees_it, within=15)
    assert await api.listed(new_id()) == []


async def test_every_method_needs_a_token(api: Api) -> None:
    calls = [
        (api.stub.CreateOrder, order_pb2.CreateOrderRequest()),
        (api.stub.GetOrder, order_pb2.GetOrderRequest(id=new_id())),
        (api.stub.ListOrders, order_pb2.ListOrdersRequest()),
        (api.stub.CancelOrder, order_pb2.CancelOrderRequest(id=new_id())),
    ]
    for call, request in calls:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as forged:
            await call(request, metadata=(("authorization", "Bearer not-a-jwt"),))
        assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("quantity", "token", "fields"),
    [
        (0, "tok_ok", {"items[0].quantity"}),
        (-3, "tok_ok", {"items[0].quantity"}),
        (1, "t" * 1_000_000, {"payment_token"}),
        (1, "", {"payment_token"}),
    ],
)
async def test_invalid_requests_are_invalid_arguments(
    api: Api, quantity: int, token: str, fields: set[str]
) -> None:
    request = order_pb2.CreateOrderRequest(
        items=[order_pb2.OrderItemRequest(product_id=MUG, quantity=quantity)], payment_token=token
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.stub.CreateOrder(request, metadata=api.auth(new_id()))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == fields
    assert api.catalog.calls == []


@pytest.mark.parametrize("bad_id", ["", "nope", "x" * 1_000_000])
async def test_malformed_ids_and_page_tokens_are_invalid_arguments(api: Api, bad_id: str) -> None:
    user = api.auth(new_id())
    for call, request in [
        (api.stub.GetOrder, order_pb2.GetOrderRequest(id=bad_id)),
        (api.stub.CancelOrder, order_pb2.CancelOrderRequest(id=bad_id)),
        (api.stub.ListOrders, order_pb2.ListOrdersRequest(page_token=bad_id or "?")),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call(request, metadata=user)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_reads_answer_while_a_writer_holds_the_database(api: Api) -> None:
    alice = new_id()
    order = await api.ended((await api.place_two(alice)).id, alice)

    async def listed_as_it_ended() -> bool:
        return await api.listed(alice) == [order]

    await wait_until(listed_as_it_ended, within=15)
    async with api.app.deps.uow_factory() as uow:
        # a command's unit of work: on SQLite it holds the write lock from its first statement
        # (BEGIN IMMEDIATE) until it ends; queries must not wait for it
        await uow.orders.get(order.id)
        got = await asyncio.wait_for(
            api.stub.GetOrder(order_pb2.GetOrderRequest(id=order.id), metadata=api.auth(alice)),
            timeout=5,
        )
        listed = await asyncio.wait_for(api.listed(alice), timeout=5)
    assert got == order
    assert listed == [order]
