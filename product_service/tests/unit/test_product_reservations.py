"""Reserving, releasing and committing stock over fakes: the state machine and idempotency."""

from __future__ import annotations

from dataclasses import replace

import pytest
from product_service.domain.model import Product, Reservation, ReservationStatus, StockItem
from product_service.service_layer import reservations, services
from product_service.service_layer.services import Dependencies
from tienda_platform.auth import Principal
from tienda_platform.errors import FailedPrecondition, InvalidArgument
from tienda_platform.ids import new_id
from tienda_platform.testing import fixed_id

from .fakes import FakeDatabase

pytestmark = pytest.mark.unit

RESERVED = ReservationStatus.RESERVED
REJECTED = ReservationStatus.REJECTED
RELEASED = ReservationStatus.RELEASED
COMMITTED = ReservationStatus.COMMITTED
DECLINED = "payment declined"


async def _product(deps: Dependencies, admin: Principal, sku: str, stock: int) -> Product:
    return await services.create_product(
        deps=deps, caller=admin, sku=sku, name=sku, description="", price_cents=100, stock=stock
    )


def _stock(database: FakeDatabase, product: Product) -> int:
    return database.committed.products[product.id].stock


async def _reserve(deps: Dependencies, order_id: str, *items: tuple[Product, int]) -> Reservation:
    return await reservations.reserve_stock(
        deps=deps, order_id=order_id, items=[StockItem(p.id, q) for p, q in items]
    )


async def _release(deps: Dependencies, order_id: str) -> Reservation:
    return await reservations.release_stock(deps=deps, order_id=order_id, reason=DECLINED)


async def test_reserve_takes_the_stock_of_every_item(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    tee = await _product(deps, admin, "TEE", 3)
    order_id = new_id()
    reservation = await _reserve(deps, order_id, (mug, 2), (tee, 3))
    assert (reservation.status, reservation.reason) == (RESERVED, "")
    assert (_stock(database, mug), _stock(database, tee)) == (3, 0)
    stored = database.committed.reservations[order_id]
    assert stored.status is RESERVED
    assert sorted(stored.items, key=lambda i: i.product_id) == sorted(
        [StockItem(mug.id, 2), StockItem(tee.id, 3)], key=lambda i: i.product_id
    )


async def test_reserve_is_all_or_nothing(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    plenty = await _product(deps, admin, "PLENTY", 100)
    scarce = await _product(deps, admin, "SCARCE", 1)
    order_id = new_id()
    # Whichever sorts first is taken before the other fails; both must end untouched.
    reservation = await _reserve(deps, order_id, (plenty, 5), (scarce, 2))
    assert (reservation.status, reservation.reason) == (REJECTED, "insufficient stock for SCARCE")
    assert (_stock(database, plenty), _stock(database, scarce)) == (100, 1)
    stored = database.committed.reservations[order_id]
    assert (stored.status, stored.items) == (REJECTED, ())


async def test_reserve_of_an_unknown_product_is_rejected(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    ghost = new_id()
    reservation = await reservations.reserve_stock(
        deps=deps, order_id=new_id(), items=[StockItem(mug.id, 1), StockItem(ghost, 1)]
    )
    assert (reservation.status, reservation.reason) == (REJECTED, f"unknown product {ghost}")
    assert _stock(database, mug) == 5


async def test_reserve_twice_answers_the_same_and_takes_stock_once(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    first = await _reserve(deps, order_id, (mug, 2))
    again = await _reserve(deps, order_id, (mug, 2))
    different = await _reserve(deps, order_id, (mug, 3))
    assert first == again == different
    assert _stock(database, mug) == 3


async def test_a_rejection_is_remembered_even_after_restocking(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 1)
    order_id = new_id()
    assert (await _reserve(deps, order_id, (mug, 2))).status is REJECTED
    await services.update_product(
        deps=deps,
        caller=admin,
        product_id=mug.id,
        update_mask=["stock"],
        sku="",
        name="",
        description="",
        price_cents=0,
        stock=10,
    )
    again = await _reserve(deps, order_id, (mug, 2))
    assert (again.status, again.reason) == (REJECTED, "insufficient stock for MUG")
    assert _stock(database, mug) == 10


async def test_losing_the_race_for_the_order_returns_the_stored_row(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    winner = Reservation(
        order_id=order_id,
        status=RESERVED,
        reason="",
        items=(StockItem(mug.id, 1),),
        create_time=database.committed.products[mug.id].create_time,
        update_time=database.committed.products[mug.id].create_time,
    )

    def competing_request_commits_first(_: Reservation) -> None:
        database.committed.reservations[order_id] = winner
        database.committed.products[mug.id] = replace(database.committed.products[mug.id], stock=4)

    database.before_reservation_add = competing_request_commits_first
    assert await _reserve(deps, order_id, (mug, 3)) == winner
    # Only the winner's quantity left the shelf; ours was rolled back.
    assert _stock(database, mug) == 4


@pytest.mark.parametrize(
    ("order_id", "items", "expected"),
    [
        ("", [StockItem(fixed_id(1), 1)], ["order_id"]),
        ("o" * 1_000_000, [StockItem(fixed_id(2), 1)], ["order_id"]),
        (fixed_id(3), [], ["items"]),
        (fixed_id(4), [StockItem(fixed_id(100 + n), 1) for n in range(51)], ["items"]),
        (fixed_id(6), [StockItem(fixed_id(7), 0)], ["items[0].quantity"]),
        (fixed_id(8), [StockItem(fixed_id(9), 1001)], ["items[0].quantity"]),
        (fixed_id(10), [StockItem(fixed_id(11), -1)], ["items[0].quantity"]),
        (fixed_id(12), [StockItem("bad", 1)], ["items[0].product_id"]),
        (fixed_id(13), [StockItem("", 1)], ["items[0].product_id"]),
        (fixed_id(14), [StockItem("a" * 1_000_000, 1)], ["items[0].product_id"]),
    ],
)
async def test_bad_reservations_are_invalid(
    deps: Dependencies,
    database: FakeDatabase,
    order_id: str,
    items: list[StockItem],
    expected: list[str],
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await reservations.reserve_stock(deps=deps, order_id=order_id, items=items)
    assert [v.field for v in error.value.violations] == expected
    assert database.committed.reservations == {}


async def test_duplicate_products_in_one_reservation_are_invalid(deps: Dependencies) -> None:
    product_id = new_id()
    with pytest.raises(InvalidArgument) as error:
        await reservations.reserve_stock(
            deps=deps,
            order_id=new_id(),
            items=[StockItem(product_id, 1), StockItem(new_id(), 1), StockItem(product_id, 2)],
        )
    assert [v.field for v in error.value.violations] == ["items[2].product_id"]


async def test_50_items_and_quantities_1_to_1000_are_accepted(
    deps: Dependencies, admin: Principal
) -> None:
    products = [await _product(deps, admin, f"P{i}", 1000) for i in range(50)]
    items = [StockItem(p.id, 1000 if i % 2 else 1) for i, p in enumerate(products)]
    reservation = await reservations.reserve_stock(deps=deps, order_id=new_id(), items=items)
    assert reservation.status is RESERVED


async def test_release_gives_the_stock_back_once(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    await _reserve(deps, order_id, (mug, 2))
    assert (await _release(deps, order_id)).status is RELEASED
    assert _stock(database, mug) == 5
    assert (await _release(deps, order_id)).status is RELEASED
    assert _stock(database, mug) == 5
    assert database.committed.reservations[order_id].status is RELEASED


async def test_release_of_a_committed_reservation_gives_the_stock_back(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    await _reserve(deps, order_id, (mug, 2))
    await reservations.commit_reservation(deps=deps, order_id=order_id)
    assert (await _release(deps, order_id)).status is RELEASED
    assert _stock(database, mug) == 5


async def test_release_of_a_rejection_leaves_it_rejected(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 1)
    order_id = new_id()
    await _reserve(deps, order_id, (mug, 2))
    assert (await _release(deps, order_id)).status is REJECTED
    assert _stock(database, mug) == 1


async def test_release_before_reserve_leaves_a_tombstone_a_late_reserve_respects(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    tombstone = await _release(deps, order_id)
    assert (tombstone.status, tombstone.items) == (RELEASED, ())
    late = await _reserve(deps, order_id, (mug, 2))
    assert late.status is RELEASED
    assert late.reason == reservations.TOMBSTONE_REASON
    assert _stock(database, mug) == 5
    with pytest.raises(FailedPrecondition):
        await reservations.commit_reservation(deps=deps, order_id=order_id)


async def test_commit_makes_a_reservation_final_and_is_idempotent(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 5)
    order_id = new_id()
    await _reserve(deps, order_id, (mug, 2))
    assert (await reservations.commit_reservation(deps=deps, order_id=order_id)).status is COMMITTED
    assert (await reservations.commit_reservation(deps=deps, order_id=order_id)).status is COMMITTED
    assert database.committed.reservations[order_id].status is COMMITTED
    assert _stock(database, mug) == 3
    # A late duplicate ReserveStock answers with the committed state and takes nothing more.
    assert (await _reserve(deps, order_id, (mug, 2))).status is COMMITTED
    assert _stock(database, mug) == 3


async def test_commit_of_anything_but_a_reservation_fails(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    mug = await _product(deps, admin, "MUG", 1)
    rejected, released = new_id(), new_id()
    await _reserve(deps, rejected, (mug, 2))
    await _reserve(deps, released, (mug, 1))
    await _release(deps, released)
    for order_id in (rejected, released, new_id()):
        with pytest.raises(FailedPrecondition):
            await reservations.commit_reservation(deps=deps, order_id=order_id)
    assert database.committed.reservations[rejected].status is REJECTED
    assert database.committed.reservations[released].status is RELEASED


@pytest.mark.parametrize("bad", ["", "123", "x" * 1_000_000])
async def test_release_and_commit_need_a_uuid(deps: Dependencies, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        await _release(deps, bad)
    with pytest.raises(InvalidArgument):
        await reservations.commit_reservation(deps=deps, order_id=bad)
