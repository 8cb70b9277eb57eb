"""Many concurrent reservations through the real unit of work never oversell."""

from __future__ import annotations

import asyncio
import random
from dataclasses import replace

import pytest
from product_service.bootstrap import ProductApp
from product_service.domain.errors import ProductChanged
from product_service.domain.model import Product, Reservation, ReservationStatus, StockItem
from product_service.service_layer import reservations, services
from product_service.service_layer.unit_of_work import SqlUnitOfWork
from tienda_platform import testing
from tienda_platform.database import session_factory
from tienda_platform.ids import new_id

from .factories import change_product, create_product

pytestmark = pytest.mark.integration

RESERVED = ReservationStatus.RESERVED
REJECTED = ReservationStatus.REJECTED
RELEASED = ReservationStatus.RELEASED
# long enough for a transaction that does not wait to finish; the waits below are bounded
NOT_WAITING = 1.0


async def _stock(app: ProductApp, product: Product) -> int:
    return (await services.get_product(deps=app.deps, product_id=product.id)).stock


async def _stored(app: ProductApp, order_id: str) -> Reservation:
    async with app.deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
    assert stored is not None
    return stored


async def test_50_concurrent_reservations_of_a_stock_of_10(app: ProductApp) -> None:
    product = await create_product(app.deps, "HOT-ITEM", stock=10)
    order_ids = [new_id() for _ in range(50)]

    async def reserve(order_id: str) -> Reservation:
        return await reservations.reserve_stock(
            deps=app.deps, order_id=order_id, items=[StockItem(product.id, 1)]
        )

    results = await asyncio.gather(*(reserve(order_id) for order_id in order_ids))
    statuses = [r.status for r in results]
    assert statuses.count(RESERVED) == 10
    assert statuses.count(REJECTED) == 40
    assert {r.reason for r in results if r.status is REJECTED} == {
        "insufficient stock for HOT-ITEM"
    }
    assert await _stock(app, product) == 0
    # What each caller was told is what was stored.
    for order_id, result in zip(order_ids, results, strict=True):
        assert (await _stored(app, order_id)).status is result.status


async def test_the_same_order_reserved_concurrently_takes_stock_once(app: ProductApp) -> None:
    product = await create_product(app.deps, "ONCE", stock=10)
    order_id = new_id()
    results = await asyncio.gather(
        *(
            reservations.reserve_stock(
                deps=app.deps, order_id=order_id, items=[StockItem(product.id, 3)]
            )
            for _ in range(10)
        )
    )
    assert {r.status for r in results} == {RESERVED}
    assert await _stock(app, product) == 7


async def test_concurrent_reserves_and_releases_keep_stock_consistent(app: ProductApp) -> None:
    # Two products reserved together in both orders of listing: a fixed lock order must keep
    # PostgreSQL free of deadlocks, and the sums must balance whatever the interleaving.
    a = await create_product(app.deps, "MIX-A", stock=12)
    b = await create_product(app.deps, "MIX-B", stock=12)
    order_ids = [new_id() for _ in range(40)]
    released = set(order_ids[::2])

    async def reserve(index: int, order_id: str) -> None:
        items = [StockItem(a.id, 1), StockItem(b.id, 1)]
        await reservations.reserve_stock(
            deps=app.deps, order_id=order_id, items=items if index % 2 else items[::-1]
        )

    async def release(order_id: str) -> None:
        await reservations.release_stock(deps=app.deps, order_id=order_id, reason="test")

    calls = [reserve(i, order_id) for i, order_id in enumerate(order_ids)]
    calls += [release(order_id) for order_id in released]
    random.Random(7).shuffle(calls)
    await asyncio.gather(*calls)

    held = 0
    for order_id in order_ids:
        stored = await _stored(app, order_id)
        if order_id in released:
            # Released after reserving, a tombstone left before it, or rejected outright.
            assert stored.status in (RELEASED, REJECTED)
        else:
            assert stored.status in (RESERVED, REJECTED)
        if stored.status is RESERVED:
            held += 1
            assert sorted(i.product_id for i in stored.items) == sorted([a.id, b.id])
    stock_a, stock_b = await _stock(app, a), await _stock(app, b)
    assert stock_a == stock_b == 12 - held >= 0
    assert held <= 12

    # Releasing everything still held, twice over and at once, gives every unit back once.
    await asyncio.gather(*(release(order_id) for order_id in order_ids + order_ids))
    assert (await _stock(app, a), await _stock(app, b)) == (12, 12)


async def test_queries_answer_while_a_reservation_holds_the_write_lock(app: ProductApp) -> None:
    product = await create_product(app.deps, "BUSY-ITEM", stock=3)
    async with app.deps.uow() as uow:
        assert await uow.products.take_stock(product.id, 1)
        # uncommitted: queries see the last committed stock and do not wait for this
        # transaction (on SQLite a query that took the write lock would wait 30 s)
        seen = await asyncio.wait_for(_stock(app, product), timeout=5)
        listed = await asyncio.wait_for(
            services.list_products(deps=app.deps, page_size=10, page_token=""), timeout=5
        )
        await uow.commit()
    assert seen == 3
    assert [p.stock for p in listed.products if p.id == product.id] == [3]
    assert await _stock(app, product) == 2


class HeldAtCommit(testing.HeldAtCommit, SqlUnitOfWork):
    """A unit of work that stops before its commit, its statements sent, until released."""


async def test_a_conditional_update_waits_for_a_reservation_and_sees_its_stock(
    app: ProductApp,
) -> None:
    """The etag is checked and the stock written under one lock: a reservation that took
    stock but has not committed yet makes the update wait, and then fail on its etag."""
    product = await create_product(app.deps, "RACED", stock=5)
    read = await services.get_product(deps=app.deps, product_id=product.id)
    assert app.engine is not None
    held = HeldAtCommit(session_factory(app.engine))
    reserving = asyncio.create_task(
        reservations.reserve_stock(
            deps=replace(app.deps, uow=lambda: held),
            order_id=new_id(),
            items=[StockItem(product.id, 2)],
        )
    )
    await asyncio.wait_for(held.reached.wait(), 10)
    updating = asyncio.create_task(change_product(app.deps, product.id, stock=10, etag=read.etag))
    done, _ = await asyncio.wait([updating], timeout=NOT_WAITING)
    assert not done, "the update went ahead while the reservation held the product"
    held.release.set()
    assert (await reserving).status is RESERVED
    with pytest.raises(ProductChanged):
        await updating
    assert await _stock(app, product) == 3
