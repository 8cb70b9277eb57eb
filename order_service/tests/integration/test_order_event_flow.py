"""The order saga in both modes, the customer snapshot and the read model, on real Redis and a
real database, through the gRPC API: CreateOrder answers PENDING, the order ends in the same
state with the same reason in both modes, and ListOrders converges to what GetOrder says."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from events.v1 import events_pb2
from order.v1 import order_pb2
from order_service.adapters.orm import PaymentChargeRow
from tienda_contracts.topology import PRODUCT_EVENTS
from tienda_platform.consumers import ProcessedEvent
from tienda_platform.database import session_factory
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint, events_consumed

from ..unit.fakes import FakePaymentProvider, FakeProductCatalog, wait_until
from .running_order_service import RunningOrderService, run_order_service

pytestmark = pytest.mark.integration

MUG, TEA = new_id(), new_id()
PENDING = order_pb2.ORDER_STATUS_PENDING
CONFIRMED = order_pb2.ORDER_STATUS_CONFIRMED
CANCELLED = order_pb2.ORDER_STATUS_CANCELLED
REJECTED = order_pb2.ORDER_STATUS_REJECTED


@pytest.fixture(params=["orchestration", "choreography"])
def saga_mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def stocked_catalog() -> FakeProductCatalog:
    catalog = FakeProductCatalog()
    catalog.add(MUG, name="Mug", price_cents=1250, stock=10)
    catalog.add(TEA, name="Tea", price_cents=499, stock=5)
    return catalog


@pytest.fixture
async def service(
    database_url: str, redis_url: str, token_mint: TokenMint, saga_mode: str, tmp_path: Path
) -> AsyncIterator[RunningOrderService]:
    async with run_order_service(
        database_url=database_url,
        redis_url=redis_url,
        mint=token_mint,
        catalog=stocked_catalog(),
        saga_mode=saga_mode,
        scratch=tmp_path,
    ) as running:
        yield running


@pytest.fixture
def payments() -> FakePaymentProvider:
    """A provider that holds tok_gated charges until its gate opens."""
    return FakePaymentProvider()


@pytest.fixture
async def service_with_held_payments(
    database_url: str,
    redis_url: str,
    token_mint: TokenMint,
    saga_mode: str,
    tmp_path: Path,
    payments: FakePaymentProvider,
) -> AsyncIterator[RunningOrderService]:
    async with run_order_service(
        database_url=database_url,
        redis_url=redis_url,
        mint=token_mint,
        catalog=stocked_catalog(),
        saga_mode=saga_mode,
        scratch=tmp_path,
        payments=payments,
        # longer than any test waits: a held charge ends when its gate opens, not by timing out
        payment_timeout_seconds=60,
    ) as running:
        yield running


async def payment_rows(service: RunningOrderService) -> list[tuple[str, str]]:
    async with session_factory(service.engine)() as session:
        rows = await session.exec(sa.select(PaymentChargeRow))
        return sorted((r[0].idempotency_key, r[0].kind) for r in rows.all())


async def converged(service: RunningOrderService, user: str, expected: order_pb2.Order) -> None:
    """ListOrders (the read model) ends up showing exactly what GetOrder shows."""

    async def same() -> bool:
        listed = {o.id: o for o in await service.listed(user)}
        return listed.get(expected.id) == expected

    await wait_until(same, within=15)


async def test_every_payment_outcome_and_out_of_stock_end_alike_in_both_modes(
    service: RunningOrderService, saga_mode: str
) -> None:
    alice = new_id()
    cases = {
        "tok_ok": ((CONFIRMED, ""), [(MUG, 2), (TEA, 1)]),
        "tok_declined": ((CANCELLED, "payment declined"), [(MUG, 1)]),
        "tok_timeout": ((CANCELLED, "payment timed out"), [(TEA, 2)]),
        "tok_out_of_stock": ((REJECTED, "insufficient stock for Mug"), [(MUG, 50)]),
    }
    placed = {}
    for token, (_, items) in cases.items():
        order = await service.place(
            alice, "tok_ok" if token == "tok_out_of_stock" else token, items
        )
        assert (order.status, order.status_reason) == (PENDING, "")
        placed[token] = order

    for token, ((status, reason), _) in cases.items():
        ended = await service.ended(placed[token].id, alice)
        assert (ended.status, ended.status_reason) == (status, reason), token
        await converged(service, alice, ended)

    confirmed = placed["tok_ok"].id
    await wait_until(lambda: service.catalog.reservations[confirmed].state == "committed")
    assert (service.catalog.stock(MUG), service.catalog.stock(TEA)) == (8, 4)
    assert await service.outbox(confirmed) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]
    assert await service.outbox(placed["tok_declined"].id) == [
        "order.created",
        "payment.declined",
        "order.cancelled",
    ]
    assert await service.outbox(placed["tok_out_of_stock"].id) == [
        "order.created",
        "order.rejected",
    ]
    if saga_mode == "orchestration":
        assert set(service.catalog.calls) >= {"reserve_stock", "commit_reservation"}


async def test_cancelling_a_confirmed_order_refunds_and_brings_the_stock_back(
    service: RunningOrderService,
) -> None:
    bob = new_id()
    order = await service.place(bob, "tok_ok", [(MUG, 3)])
    await service.ended(order.id, bob)
    await wait_until(lambda: service.catalog.reservations[order.id].state == "committed")
    assert service.catalog.stock(MUG) == 7

    cancelled = await service.stub.CancelOrder(
        order_pb2.CancelOrderRequest(id=order.id), metadata=service.auth(bob)
    )
    assert (cancelled.status, cancelled.status_reason) == (CANCELLED, "cancelled by customer")

    await wait_until(lambda: service.catalog.stock(MUG) == 10)
    refund = (f"{order.id}:refund", "refund")

    async def refunded() -> bool:
        return refund in await payment_rows(service)

    await wait_until(refunded)
    assert await service.outbox(order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
        "order.cancelled",
    ]
    await converged(service, bob, await service.get(order.id, bob))


@pytest.mark.parametrize("saga_mode", ["choreography"])  # stock events drive only these
async def test_duplicate_stock_events_have_no_second_effect(service: RunningOrderService) -> None:
    carol = new_id()
    order = await service.place(carol, "tok_ok", [(TEA, 1)])
    await service.ended(order.id, carol)
    reserved = await service.publish(
        "stock.reserved", f"orders/{order.id}", events_pb2.StockReserved(order_id=order.id)
    )
    await service.republish(reserved)  # the same event delivered twice
    rejected = await service.publish(
        "stock.rejected",
        f"orders/{order.id}",
        events_pb2.StockRejected(order_id=order.id, reason="too late"),
    )
    marker = new_id()
    marker_order = await service.place(marker, "tok_ok", [(TEA, 1)])
    await service.ended(marker_order.id, marker)  # later events were handled by now

    assert reserved.id and rejected.id
    assert (await service.get(order.id, carol)).status == CONFIRMED
    assert await service.outbox(order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]
    assert (await payment_rows(service)).count((f"{order.id}:charge", "charge")) == 1


@pytest.mark.parametrize("saga_mode", ["orchestration"])
async def test_stock_events_of_orchestrated_orders_are_acknowledged_without_a_transaction(
    service: RunningOrderService,
) -> None:
    """product_service marks the stock events of an orchestrated order (its saga reserved by
    RPC): the choreography's handlers ignore them without reading the order. An event from
    before stock events carried the mode is handled (the handler finds nothing to do)."""
    dave = new_id()
    order = await service.place(dave, "tok_ok", [(TEA, 1)])
    assert (await service.ended(order.id, dave)).status == CONFIRMED

    def ignored() -> float:
        return events_consumed(PRODUCT_EVENTS, "order_service", "stock.reserved", "ignored")

    async def processed(event_id: str) -> bool:
        async with session_factory(service.engine)() as session:
            row = await session.get(ProcessedEvent, ("order_service", event_id))
            return row is not None

    before = ignored()
    subject = f"orders/{order.id}"
    marked = await service.publish(
        "stock.reserved",
        subject,
        events_pb2.StockReserved(order_id=order.id, saga_mode="orchestration"),
    )
    unmarked = await service.publish(
        "stock.reserved", subject, events_pb2.StockReserved(order_id=order.id)
    )
    await wait_until(lambda: processed(unmarked.id), within=15)
    assert ignored() == before + 1
    assert not await processed(marked.id)
    assert (await service.get(order.id, dave)).status == CONFIRMED
    assert await service.outbox(order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]


async def test_customer_snapshot_names_orders_and_user_deletion_cancels_pending_ones(
    service_with_held_payments: RunningOrderService, payments: FakePaymentProvider
) -> None:
    """In both modes: a deletion cancels the order whose stock is reserved and whose charge is
    in flight; the stock comes back (the saga releases it, or product_service on
    order.cancelled) and the charge that went through anyway is refunded."""
    service = service_with_held_payments
    dora = new_id()
    await service.publish(
        "user.registered",
        f"users/{dora}",
        events_pb2.UserRegistered(user_id=dora, email="dora@x.io", full_name="Dora Maar"),
    )

    async def named(name: str, order_id: str) -> bool:
        got = await service.get(order_id, dora)
        listed = {o.id: o.customer_name for o in await service.listed(dora)}
        return got.customer_name == name and listed.get(order_id) == name

    confirmed = await service.place(dora, "tok_ok", [(MUG, 1)])
    await service.ended(confirmed.id, dora)
    await wait_until(lambda: named("Dora Maar", confirmed.id), within=15)

    await service.publish(
        "user.updated",
        f"users/{dora}",
        events_pb2.UserUpdated(user_id=dora, email="dora@y.io", full_name="Dora Markovitch"),
    )
    await wait_until(lambda: named("Dora Markovitch", confirmed.id), within=15)

    await wait_until(lambda: service.catalog.reservations[confirmed.id].state == "committed")
    # tok_gated holds the charge: the order stays PENDING with its stock reserved
    pending = await service.place(dora, "tok_gated", [(MUG, 1)])
    assert (pending.status, pending.status_reason) == (PENDING, "")
    await wait_until(lambda: any(c[2] == f"{pending.id}:charge" for c in payments.charges))
    assert service.catalog.reservations[pending.id].state == "reserved"
    assert service.catalog.stock(MUG) == 8
    price_before = pending.items[0].unit_price_cents
    service.catalog.products[MUG].price_cents = 99_999  # a price change alters no order
    await service.publish("user.deleted", f"users/{dora}", events_pb2.UserDeleted(user_id=dora))

    ended = await service.ended(pending.id, dora)
    assert (ended.status, ended.status_reason) == (CANCELLED, "customer deleted")
    assert ended.items[0].unit_price_cents == price_before
    payments.gate.set()  # the provider approves the charge after all
    await wait_until(lambda: service.catalog.reservations[pending.id].state == "released")
    assert service.catalog.stock(MUG) == 9
    await wait_until(lambda: any(r[2] == f"{pending.id}:refund" for r in payments.refunds))
    assert (await service.get(pending.id, dora)).status == CANCELLED
    assert (await service.get(confirmed.id, dora)).status == CONFIRMED
    assert service.catalog.reservations[confirmed.id].state == "committed"
    await wait_until(lambda: named("Deleted customer", confirmed.id), within=15)
    await wait_until(lambda: named("Deleted customer", pending.id), within=15)
    assert await service.outbox(pending.id) == ["order.created", "order.cancelled"]
