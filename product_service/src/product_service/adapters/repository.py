"""Repositories of products and reservations: abstract ports and their SQL adapters."""

from __future__ import annotations

import abc
from collections.abc import Collection, Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import new_row

from product_service.adapters.orm import ProductRow, ReservationItemRow, ReservationRow
from product_service.domain.errors import ReservationAlreadyExists, SkuAlreadyExists
from product_service.domain.model import Product, Reservation, ReservationStatus, StockItem

# Statements every order runs, built once: building one costs more than running it. The two
# UPDATEs are on the tables, not the mapped classes, so the ORM does not look for objects of
# the session to change along with the rows: these repositories keep no rows, they turn what
# they read into domain objects, so a row read again after an UPDATE is read afresh.
_PRODUCT = select(ProductRow).where(col(ProductRow.id) == sa.bindparam("product_id"))
_BY_ID = {False: _PRODUCT, True: _PRODUCT.with_for_update()}
_BY_IDS = select(ProductRow).where(
    col(ProductRow.id).in_(sa.bindparam("product_ids", expanding=True))
)
_PRODUCTS: sa.Table = ProductRow.__table__  # type: ignore[attr-defined]
_TAKE_STOCK = (
    sa.update(_PRODUCTS)
    .where(
        _PRODUCTS.c.id == sa.bindparam("product_id"),
        _PRODUCTS.c.stock >= sa.bindparam("quantity"),
    )
    .values(stock=_PRODUCTS.c.stock - sa.bindparam("quantity"))
)
_RESERVATIONS: sa.Table = ReservationRow.__table__  # type: ignore[attr-defined]
_CHANGE_STATUS = (
    sa.update(_RESERVATIONS)
    .where(
        _RESERVATIONS.c.order_id == sa.bindparam("reservation"),
        _RESERVATIONS.c.status == sa.bindparam("expected"),
    )
    .values(status=sa.bindparam("new_status"), update_time=sa.bindparam("at"))
)


class AbstractProductRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, product: Product) -> None:
        """Store a new product; raises SkuAlreadyExists when the sku is taken."""

    @abc.abstractmethod
    async def get(self, product_id: str, *, for_update: bool = False) -> Product | None:
        """The product, or None; for_update locks it until the transaction ends."""

    @abc.abstractmethod
    async def get_many(self, product_ids: Collection[str]) -> list[Product]:
        """The products among these ids that exist, in no particular order."""

    @abc.abstractmethod
    async def list_after(self, *, after_id: str | None, limit: int) -> list[Product]:
        """Up to limit products with an id greater than after_id, by id ascending."""

    @abc.abstractmethod
    async def update(self, product: Product, *, fields: Collection[str]) -> None:
        """Write the named fields and the update time; raises SkuAlreadyExists on a taken sku."""

    @abc.abstractmethod
    async def take_stock(self, product_id: str, quantity: int) -> bool:
        """Take quantity off the stock if that much is there; False (nothing taken) otherwise."""

    @abc.abstractmethod
    async def return_stock(self, product_id: str, quantity: int) -> None: ...

    @abc.abstractmethod
    async def is_empty(self) -> bool: ...


class AbstractReservationRepository(abc.ABC):
    @abc.abstractmethod
    async def get(self, order_id: str) -> Reservation | None: ...

    @abc.abstractmethod
    async def add(self, reservation: Reservation) -> None:
        """Store a reservation and its items; ReservationAlreadyExists if the order has one."""

    @abc.abstractmethod
    async def change_status(
        self,
        order_id: str,
        *,
        expected: ReservationStatus,
        new: ReservationStatus,
        at: datetime,
    ) -> bool:
        """Move the reservation from expected to new; False when it was not in expected."""


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _product(row: ProductRow) -> Product:
    return Product(
        id=row.id,
        sku=row.sku,
        name=row.name,
        description=row.description,
        price_cents=row.price_cents,
        stock=row.stock,
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
    )


class SqlProductRepository(AbstractProductRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, product: Product) -> None:
        self._session.add(
            ProductRow(
                id=product.id,
                sku=product.sku,
                name=product.name,
                description=product.description,
                price_cents=product.price_cents,
                stock=product.stock,
                create_time=product.create_time,
                update_time=product.update_time,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError:
            # The only unique column besides the fresh UUIDv7 key is the sku.
            raise SkuAlreadyExists(product.sku) from None

    async def get(self, product_id: str, *, for_update: bool = False) -> Product | None:
        found = await self._session.exec(_BY_ID[for_update], params={"product_id": product_id})
        row = found.first()
        return None if row is None else _product(row)

    async def get_many(self, product_ids: Collection[str]) -> list[Product]:
        found = await self._session.exec(_BY_IDS, params={"product_ids": list(product_ids)})
        return [_product(row) for row in found.all()]

    async def list_after(self, *, after_id: str | None, limit: int) -> list[Product]:
        statement = select(ProductRow).order_by(col(ProductRow.id)).limit(limit)
        if after_id is not None:
            statement = statement.where(col(ProductRow.id) > after_id)
        return [_product(row) for row in (await self._session.exec(statement)).all()]

    async def update(self, product: Product, *, fields: Collection[str]) -> None:
        # Only the named columns: a stale copy must not overwrite stock taken meanwhile.
        values = {name: getattr(product, name) for name in fields}
        try:
            await self._session.exec(
                sa.update(ProductRow)
                .where(col(ProductRow.id) == product.id)
                .values(**values, update_time=product.update_time)
            )
        except IntegrityError:
            if "sku" not in fields:
                raise
            raise SkuAlreadyExists(product.sku) from None

    async def take_stock(self, product_id: str, quantity: int) -> bool:
        # One conditional statement: the row lock (PostgreSQL) or the write lock (SQLite) makes
        # check and decrement atomic, so concurrent reservations can never oversell.
        result = await self._session.exec(
            _TAKE_STOCK, params={"product_id": product_id, "quantity": quantity}
        )
        return result.rowcount == 1

    async def return_stock(self, product_id: str, quantity: int) -> None:
        await self._session.exec(
            sa.update(ProductRow)
            .where(col(ProductRow.id) == product_id)
            .values(stock=col(ProductRow.stock) + quantity)
        )

    async def is_empty(self) -> bool:
        row = (await self._session.exec(select(ProductRow.id).limit(1))).first()
        return row is None


# A reservation and its items in one statement, a row per item; built once (every order
# reads its reservation twice): its construction costs more than its execution.
_RESERVATION = (
    select(ReservationRow, ReservationItemRow)
    .join(
        ReservationItemRow,
        col(ReservationItemRow.order_id) == col(ReservationRow.order_id),
        isouter=True,
    )
    .where(col(ReservationRow.order_id) == sa.bindparam("order_id"))
    .order_by(col(ReservationItemRow.product_id))
)


class SqlReservationRepository(AbstractReservationRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, order_id: str) -> Reservation | None:
        found = (await self._session.exec(_RESERVATION, params={"order_id": order_id})).all()
        if not found:
            return None
        row = found[0][0]
        items = [item for _, item in found if item is not None]
        return Reservation(
            order_id=row.order_id,
            status=ReservationStatus(row.status),
            reason=row.reason,
            items=tuple(StockItem(item.product_id, item.quantity) for item in items),
            create_time=_utc(row.create_time),
            update_time=_utc(row.update_time),
        )

    async def add(self, reservation: Reservation) -> None:
        self._session.add(
            new_row(
                ReservationRow,
                order_id=reservation.order_id,
                status=reservation.status.value,
                reason=reservation.reason,
                create_time=reservation.create_time,
                update_time=reservation.update_time,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError:
            raise ReservationAlreadyExists(reservation.order_id) from None
        # written with the rest of the transaction, at its commit
        self._session.add_all(_item_rows(reservation.order_id, reservation.items))

    async def change_status(
        self,
        order_id: str,
        *,
        expected: ReservationStatus,
        new: ReservationStatus,
        at: datetime,
    ) -> bool:
        # Conditional on the current status: of two concurrent transitions only one wins.
        result = await self._session.exec(
            _CHANGE_STATUS,
            params={
                "reservation": order_id,
                "expected": expected.value,
                "new_status": new.value,
                "at": at,
            },
        )
        return result.rowcount == 1


def _item_rows(order_id: str, items: Sequence[StockItem]) -> list[ReservationItemRow]:
    return [
        new_row(
            ReservationItemRow,
            order_id=order_id,
            product_id=item.product_id,
            quantity=item.quantity,
        )
        for item in items
    ]
