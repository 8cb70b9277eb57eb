"""The SQL repositories on SQLite and PostgreSQL: what they store, find and refuse."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from product_service.adapters.orm import ProductRow
from product_service.bootstrap import ProductApp
from product_service.domain.errors import ReservationAlreadyExists, SkuAlreadyExists
from product_service.domain.model import Product, Reservation, ReservationStatus, StockItem
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from tienda_platform.ids import new_id

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 9, 30, 15, 123456, tzinfo=UTC)


def _product(sku: str, stock: int = 10) -> Product:
    return Product(
        id=new_id(),
        sku=sku,
        name=f"Name of {sku}",
        description="Line one\nline two — ünïcode",
        price_cents=10_000_000_00,
        stock=stock,
        create_time=NOW,
        update_time=NOW,
    )


async def _add(app: ProductApp, *products: Product) -> None:
    async with app.deps.uow() as uow:
        for product in products:
            await uow.products.add(product)
        await uow.commit()


async def test_a_product_round_trips_with_utc_times(app: ProductApp) -> None:
    product = _product("RT-1")
    await _add(app, product)
    async with app.deps.uow() as uow:
        assert await uow.products.get(product.id) == product
        assert await uow.products.get(new_id()) is None
        assert not await uow.products.is_empty()


async def test_nothing_is_kept_without_commit(app: ProductApp) -> None:
    product = _product("GONE")
    async with app.deps.uow() as uow:
        await uow.products.add(product)
    async with app.deps.uow() as uow:
        assert await uow.products.get(product.id) is None
        assert await uow.products.is_empty()


async def test_a_taken_sku_is_refused(app: ProductApp) -> None:
    await _add(app, _product("DUP"))
    with pytest.raises(SkuAlreadyExists):
        await _add(app, _product("DUP"))
    other = _product("OTHER")
    await _add(app, other)
    async with app.deps.uow() as uow:
        with pytest.raises(SkuAlreadyExists):
            await uow.products.update(replace(other, sku="DUP"), fields={"sku"})


async def test_list_after_pages_by_id(app: ProductApp) -> None:
    products = [_product(f"L-{i}") for i in range(5)]
    await _add(app, *reversed(products))
    ids = sorted(p.id for p in products)
    async with app.deps.uow() as uow:
        assert [p.id for p in await uow.products.list_after(after_id=None, limit=3)] == ids[:3]
        rest = await uow.products.list_after(after_id=ids[2], limit=3)
        assert [p.id for p in rest] == ids[3:]
        many = await uow.products.get_many([ids[4], ids[0], new_id()])
        assert {p.id for p in many} == {ids[0], ids[4]}


async def test_update_writes_only_the_named_fields(app: ProductApp) -> None:
    product = _product("UPD", stock=10)
    await _add(app, product)
    async with app.deps.uow() as uow:
        assert await uow.products.take_stock(product.id, 4)
        await uow.commit()
    later = NOW + timedelta(minutes=5)
    stale = replace(product, name="Renamed", update_time=later)
    async with app.deps.uow() as uow:
        # `stale` still says stock 10; only the name may be written.
        await uow.products.update(stale, fields={"name"})
        await uow.commit()
    async with app.deps.uow() as uow:
        stored = await uow.products.get(product.id)
    assert stored is not None
    assert (stored.name, stored.stock, stored.update_time) == ("Renamed", 6, later)


async def test_take_stock_is_conditional_and_return_stock_adds(app: ProductApp) -> None:
    product = _product("STOCK", stock=3)
    await _add(app, product)
    async with app.deps.uow() as uow:
        assert await uow.products.take_stock(product.id, 3)
        assert not await uow.products.take_stock(product.id, 1)
        assert not await uow.products.take_stock(new_id(), 1)
        await uow.products.return_stock(product.id, 2)
        await uow.commit()
    async with app.deps.uow() as uow:
        stored = await uow.products.get(product.id)
    assert stored is not None and stored.stock == 2


async def test_the_database_itself_refuses_negative_stock(app: ProductApp) -> None:
    product = _product("NEG", stock=1)
    await _add(app, product)
    assert app.engine is not None
    with pytest.raises(IntegrityError):
        async with app.engine.begin() as connection:
            await connection.execute(
                sa.update(ProductRow).where(col(ProductRow.id) == product.id).values(stock=-1)
            )


async def test_reservations_round_trip_and_are_unique_per_order(app: ProductApp) -> None:
    a, b = _product("RES-A"), _product("RES-B")
    await _add(app, a, b)
    order_id = new_id()
    reservation = Reservation(
        order_id=order_id,
        status=ReservationStatus.RESERVED,
        reason="",
        items=tuple(sorted([StockItem(a.id, 2), StockItem(b.id, 1)], key=lambda i: i.product_id)),
        create_time=NOW,
        update_time=NOW,
    )
    async with app.deps.uow() as uow:
        await uow.reservations.add(reservation)
        await uow.commit()
    selects: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            selects.append(statement)

    async with app.deps.uow() as uow:
        sa.event.listen(app.engine.sync_engine, "before_cursor_execute", record)
        try:
            assert await uow.reservations.get(order_id) == reservation
        finally:
            sa.event.remove(app.engine.sync_engine, "before_cursor_execute", record)
        assert len(selects) == 1  # the reservation with its items
        assert await uow.reservations.get(new_id()) is None
        with pytest.raises(ReservationAlreadyExists):
            await uow.reservations.add(reservation)


async def test_change_status_only_from_the_expected_status(app: ProductApp) -> None:
    order_id = new_id()
    rejected = Reservation(
        order_id=order_id,
        status=ReservationStatus.REJECTED,
        reason="insufficient stock for X",
        items=(),
        create_time=NOW,
        update_time=NOW,
    )
    async with app.deps.uow() as uow:
        await uow.reservations.add(rejected)
        await uow.commit()
    later = NOW + timedelta(seconds=1)
    async with app.deps.uow() as uow:
        assert not await uow.reservations.change_status(
            order_id, expected=ReservationStatus.RESERVED, new=ReservationStatus.RELEASED, at=later
        )
        assert await uow.reservations.change_status(
            order_id, expected=ReservationStatus.REJECTED, new=ReservationStatus.RELEASED, at=later
        )
        await uow.commit()
    async with app.deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
    assert stored is not None
    assert (stored.status, stored.reason, stored.update_time) == (
        ReservationStatus.RELEASED,
        "insufficient stock for X",
        later,
    )


async def test_a_reservation_read_again_after_its_status_changed_shows_the_change(
    app: ProductApp,
) -> None:
    product = _product("RES-AGAIN")
    await _add(app, product)
    order_id = new_id()
    item = StockItem(product_id=product.id, quantity=2)
    reserved = Reservation(
        order_id=order_id,
        status=ReservationStatus.RESERVED,
        reason="",
        items=(item,),
        create_time=NOW,
        update_time=NOW,
    )
    async with app.deps.uow() as uow:
        await uow.reservations.add(reserved)
        await uow.commit()
    later = NOW + timedelta(seconds=1)
    async with app.deps.uow() as uow:
        # the rows read here stay in the session while the status changes under them
        assert await uow.reservations.get(order_id) == reserved
        assert await uow.reservations.change_status(
            order_id, expected=ReservationStatus.RESERVED, new=ReservationStatus.COMMITTED, at=later
        )
        again = await uow.reservations.get(order_id)
        await uow.commit()
    assert again == replace(reserved, status=ReservationStatus.COMMITTED, update_time=later)
