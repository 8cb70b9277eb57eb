"""Which events each use case records, over fakes: one per state change, none for a call that
changes nothing, none for a transaction that does not commit."""

from __future__ import annotations

import pytest
from events.v1 import events_pb2
from google.protobuf.message import Message
from product_service.domain.errors import SkuAlreadyExists
from product_service.domain.model import Product, Reservation, StockItem
from product_service.service_layer import reservations, services
from product_service.service_layer.demo_catalogue import DEMO_PRODUCTS, seed_demo_products
from product_service.service_layer.services import Dependencies
from tienda_platform.auth import Principal
from tienda_platform.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
)
from tienda_platform.ids import new_id

from .fakes import FakeDatabase, RecordedEvent

pytestmark = pytest.mark.unit

DECLINED = "payment declined"


async def _product(deps: Dependencies, admin: Principal, sku: str, stock: int) -> Product:
    return await services.create_product(
        deps=deps, caller=admin, sku=sku, name=sku, description="", price_cents=250, stock=stock
    )


async def _reserve(deps: Dependencies, order_id: str, product: Product, quantity: int) -> None:
    await reservations.reserve_stock(
        deps=deps, order_id=order_id, items=[StockItem(product.id, quantity)]
    )


def _since(database: FakeDatabase, start: int) -> list[tuple[str, str, Message]]:
    return [(e.event_type, e.subject, e.payload) for e in database.events[start:]]


async def test_create_and_update_record_the_product_as_it_now_stands(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    await _reserve(deps, new_id(), mug, 2)
    start = len(database.events)
    await services.update_product(
        deps=deps,
        caller=admin,
        product_id=mug.id,
        update_mask=["price_cents"],
        sku="",
        name="",
        description="",
        price_cents=300,
        stock=0,
    )
    subject = f"products/{mug.id}"
    assert database.events[0] == RecordedEvent(
        "product.created",
        subject,
        events_pb2.ProductChanged(
            product_id=mug.id, sku="MUG", name="MUG", price_cents=250, stock=5
        ),
    )
    # The stock is what the reservation left, not what the stale copy or the request said.
    assert _since(database, start) == [
        (
            "product.updated",
            subject,
            events_pb2.ProductChanged(
                product_id=mug.id, sku="MUG", name="MUG", price_cents=300, stock=3
            ),
        )
    ]


async def test_a_refused_change_records_nothing(
    deps: Dependencies, admin: Principal, customer: Principal, database: FakeDatabase
) -> None:
    await _product(deps, admin, "MUG", 5)
    start = len(database.events)
    with pytest.raises(SkuAlreadyExists):
        await _product(deps, admin, "MUG", 1)
    with pytest.raises(PermissionDenied):
        await _product(deps, customer, "TEE", 1)
    assert database.events[start:] == []


async def test_the_demo_catalogue_announces_each_product(
    deps: Dependencies, database: FakeDatabase
) -> None:
    await seed_demo_products(deps=deps)
    await seed_demo_products(deps=deps)
    assert [e.event_type for e in database.events] == ["product.created"] * len(DEMO_PRODUCTS)
    assert {e.subject for e in database.events} == {
        f"products/{p}" for p in database.committed.products
    }


async def test_a_reservation_records_its_decision_once(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 3)
    reserved, rejected = new_id(), new_id()
    start = len(database.events)
    for _ in range(2):
        await _reserve(deps, reserved, mug, 2)
        await _reserve(deps, rejected, mug, 2)
    assert _since(database, start) == [
        ("stock.reserved", f"orders/{reserved}", events_pb2.StockReserved(order_id=reserved)),
        (
            "stock.rejected",
            f"orders/{rejected}",
            events_pb2.StockRejected(order_id=rejected, reason="insufficient stock for MUG"),
        ),
    ]


async def test_commit_and_release_record_only_real_changes(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 3)
    order_id = new_id()
    await _reserve(deps, order_id, mug, 2)
    start = len(database.events)
    for _ in range(2):
        await reservations.commit_reservation(deps=deps, order_id=order_id)
    for _ in range(2):
        await reservations.release_stock(deps=deps, order_id=order_id, reason=DECLINED)
    with pytest.raises(FailedPrecondition):
        await reservations.commit_reservation(deps=deps, order_id=order_id)
    subject = f"orders/{order_id}"
    assert _since(database, start) == [
        ("stock.committed", subject, events_pb2.StockCommitted(order_id=order_id)),
        ("stock.released", subject, events_pb2.StockReleased(order_id=order_id, reason=DECLINED)),
    ]


async def test_a_release_tombstone_is_announced_but_a_rejection_is_not_released(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 1)
    early, rejected = new_id(), new_id()
    await _reserve(deps, rejected, mug, 2)
    start = len(database.events)
    await reservations.release_stock(deps=deps, order_id=early, reason=DECLINED)
    await reservations.release_stock(deps=deps, order_id=rejected, reason=DECLINED)
    await _reserve(deps, early, mug, 1)  # late: the tombstone answers, nothing is taken
    assert _since(database, start) == [
        (
            "stock.released",
            f"orders/{early}",
            events_pb2.StockReleased(order_id=early, reason=DECLINED),
        )
    ]


async def test_the_loser_of_a_race_records_nothing(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()

    def competitor_commits(reservation: Reservation) -> None:
        database.committed.reservations[order_id] = reservation
        database.before_reservation_add = None

    database.before_reservation_add = competitor_commits
    start = len(database.events)
    await _reserve(deps, order_id, mug, 2)
    assert database.events[start:] == []


async def test_an_unreservable_order_is_rejected_once_with_its_first_violation(
    deps: Dependencies, database: FakeDatabase
) -> None:
    order_id = new_id()
    error = InvalidArgument(
        "bad",
        [
            FieldViolation("items[0].quantity", "must be between 1 and 1000"),
            FieldViolation("items[1].product_id", "must be a UUID"),
        ],
    )
    reason = reservations.rejection_reason(error)
    assert reason == "invalid order: items[0].quantity must be between 1 and 1000"
    for _ in range(2):
        decided = await reservations.reject_reservation(deps=deps, order_id=order_id, reason=reason)
        assert decided.reason == reason
    assert _since(database, 0) == [
        (
            "stock.rejected",
            f"orders/{order_id}",
            events_pb2.StockRejected(order_id=order_id, reason=reason),
        )
    ]
    long = reservations.rejection_reason(InvalidArgument("x" * 1000))
    assert len(long) == 255 and long.startswith("invalid order: xxx")


async def test_a_decided_order_is_not_rejected_afterwards(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    await _reserve(deps, order_id, mug, 1)
    start = len(database.events)
    stored = await reservations.reject_reservation(deps=deps, order_id=order_id, reason="no")
    assert stored.reason == ""
    assert database.events[start:] == []
