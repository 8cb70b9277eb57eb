"""Where orders are kept: the repository port and its SQL implementation."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select
from tienda_platform.database import new_row

from order_service.adapters.orm import (
    CustomerRow,
    OrderItemRow,
    OrderRequestRow,
    OrderRow,
    PaymentRow,
    SagaRow,
)
from order_service.domain.errors import RequestAlreadyPlaced
from order_service.domain.model import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    SagaMode,
)


class OrderRepository(abc.ABC):
    """Orders with their lines and payments, loaded and saved as whole aggregates."""

    @abc.abstractmethod
    async def add(self, order: Order) -> None:
        """Store a new order."""

    @abc.abstractmethod
    async def get(
        self, order_id: str, *, for_update: bool = False, in_mode: SagaMode | None = None
    ) -> Order | None:
        """The order, or None; for_update locks it until the transaction ends. With in_mode,
        None as well when the order was placed in another saga mode."""

    @abc.abstractmethod
    async def save(self, order: Order) -> None:
        """Store a loaded order's status and its new payments."""

    @abc.abstractmethod
    async def pending_of(self, customer_id: str) -> list[Order]:
        """The customer's PENDING orders."""

    @abc.abstractmethod
    async def placed_by_request(self, customer_id: str, request_id: str) -> PlacedRequest | None:
        """The order the customer's request `request_id` placed, if it did."""

    @abc.abstractmethod
    async def remember_request(self, placed: PlacedRequest) -> None:
        """Keep which order a request placed, with the order's transaction; raises
        RequestAlreadyPlaced if another transaction kept the same request first."""


@dataclass(frozen=True)
class PlacedRequest:
    customer_id: str
    request_id: str
    order_id: str
    fingerprint: str


def utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time this service stores is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _order_row(order: Order) -> OrderRow:
    return new_row(
        OrderRow,
        id=order.id,
        customer_id=order.customer_id,
        status=order.status.value,
        status_reason=order.status_reason,
        total_cents=order.total_cents,
        payment_token=order.payment_token,
        create_time=order.create_time,
        update_time=order.update_time,
        saga_mode=order.saga_mode.value,
    )


def _payment_values(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "order_id": payment.order_id,
        "status": payment.status.value,
        "amount_cents": payment.amount_cents,
        "provider_reference": payment.provider_reference,
        "create_time": payment.create_time,
    }


def _payment_row(payment: Payment) -> PaymentRow:
    return new_row(PaymentRow, **_payment_values(payment))


def _order(
    row: OrderRow,
    items: Sequence[OrderItemRow],
    payments: Sequence[PaymentRow],
    customer_name: str,
    customer_email: str,
) -> Order:
    return Order(
        id=row.id,
        customer_id=row.customer_id,
        status=OrderStatus(row.status),
        status_reason=row.status_reason,
        lines=[
            OrderLine(
                product_id=item.product_id,
                product_name=item.product_name,
                quantity=item.quantity,
                unit_price_cents=item.unit_price_cents,
            )
            for item in sorted(items, key=lambda i: i.position)
        ],
        total_cents=row.total_cents,
        payment_token=row.payment_token,
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        saga_mode=SagaMode(row.saga_mode),
        customer_name=customer_name,
        customer_email=customer_email,
        payments=[
            Payment(
                id=p.id,
                order_id=p.order_id,
                status=PaymentStatus(p.status),
                amount_cents=p.amount_cents,
                provider_reference=p.provider_reference,
                create_time=utc(p.create_time),
            )
            for p in sorted(payments, key=lambda p: (utc(p.create_time), p.id))
        ],
    )


_ORDERS = OrderRow.__table__  # type: ignore[attr-defined]
# Built once, as every saga step runs them; the UPDATE sets the columns its parameters name.
_SAVE_STATUS = sa.update(_ORDERS).where(_ORDERS.c.id == sa.bindparam("key"))
_INSERT_PAYMENTS = sa.insert(PaymentRow.__table__)  # type: ignore[attr-defined]


class SqlOrderRepository(OrderRepository):
    """Orders in the service's SQL database (SQLite or PostgreSQL).

    The repository holds on to the rows it loaded or added for as long as its session lives:
    the session's identity map keeps rows only while something references them, and without
    these references saving an order would read its row (and its payments' ids) once more.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._rows: dict[str, OrderRow] = {}
        self._payment_ids: dict[str, set[str]] = {}

    async def add(self, order: Order) -> None:
        row = _order_row(order)
        self._session.add(row)
        # The order row goes first: SQLite and PostgreSQL check the foreign keys of the rows
        # that refer to it as they are inserted. Relationships to it would make the unit of
        # work order the inserts, but their bookkeeping, at every flush of those rows, costs
        # more than this flush.
        await self._session.flush()
        self._session.add_all(
            new_row(
                OrderItemRow,
                order_id=order.id,
                product_id=line.product_id,
                position=position,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price_cents=line.unit_price_cents,
            )
            for position, line in enumerate(order.lines)
        )
        self._session.add_all(_payment_row(payment) for payment in order.payments)
        self._rows[order.id] = row
        self._payment_ids[order.id] = {payment.id for payment in order.payments}

    async def get(
        self, order_id: str, *, for_update: bool = False, in_mode: SagaMode | None = None
    ) -> Order | None:
        params = {"order_id": order_id}
        if in_mode is not None:
            params["saga_mode"] = in_mode.value
        query = _BY_ID[for_update, in_mode is not None]
        orders = self._assemble((await self._session.exec(query, params=params)).all())
        return orders[0] if orders else None

    async def get_with_saga(
        self, order_id: str, *, for_update: bool = False
    ) -> tuple[Order, SagaRow] | None:
        """The order and its saga's row in one statement; None when either is missing.
        for_update locks both rows (the order's first)."""
        query = _WITH_SAGA_FOR_UPDATE if for_update else _WITH_SAGA
        found = (await self._session.exec(query, params={"order_id": order_id})).all()
        if not found:
            return None
        orders = self._assemble(
            [(row, name, email, item, pay) for row, name, email, item, pay, _ in found]
        )
        return orders[0], found[0][5]

    async def save(self, order: Order) -> None:
        row = self._rows.get(order.id) or await self._session.get(OrderRow, order.id)
        if row is None:
            raise LookupError(f"order {order.id} was never added")
        stored = self._payment_ids.get(order.id)
        if stored is None:
            stored = set(
                (
                    await self._session.exec(
                        select(PaymentRow.id).where(PaymentRow.order_id == order.id)
                    )
                ).all()
            )
        new = [payment for payment in order.payments if payment.id not in stored]
        # Written at once, by statements built once, and the loaded row takes the new values
        # as its committed state: the unit of work's bookkeeping for a changed order and its
        # new payments, at every step of every order, cost more than the statements.
        if new:
            await self._session.exec(
                _INSERT_PAYMENTS, params=[_payment_values(payment) for payment in new]
            )
        change = {
            "status": order.status.value,
            "status_reason": order.status_reason,
            "update_time": order.update_time,
        }
        await self._session.exec(_SAVE_STATUS, params={"key": order.id, **change})
        for name, value in change.items():
            set_committed_value(row, name, value)
        self._payment_ids[order.id] = stored | {payment.id for payment in new}

    async def placed_by_request(self, customer_id: str, request_id: str) -> PlacedRequest | None:
        row = await self._session.get(OrderRequestRow, (customer_id, request_id))
        if row is None:
            return None
        return PlacedRequest(
            customer_id=row.customer_id,
            request_id=row.request_id,
            order_id=row.order_id,
            fingerprint=row.fingerprint,
        )

    async def remember_request(self, placed: PlacedRequest) -> None:
        self._session.add(
            OrderRequestRow(
                customer_id=placed.customer_id,
                request_id=placed.request_id,
                order_id=placed.order_id,
                fingerprint=placed.fingerprint,
                create_time=datetime.now(UTC),
            )
        )
        try:
            # now, not at commit: on PostgreSQL this waits for a transaction that inserted
            # the same request and has not committed yet, and fails if that one commits
            await self._session.flush()
        except IntegrityError as error:
            raise RequestAlreadyPlaced(placed.request_id) from error

    async def pending_of(self, customer_id: str) -> list[Order]:
        query = _whole_orders().where(
            OrderRow.customer_id == customer_id, OrderRow.status == OrderStatus.PENDING.value
        )
        return self._assemble((await self._session.exec(query)).all())

    def _assemble(self, found: Sequence[_WholeOrderRow]) -> list[Order]:
        """Orders from the rows of _whole_orders, in the order they came."""
        parts: dict[str, tuple[OrderRow, str, str, dict[int, OrderItemRow], dict[str, PaymentRow]]]
        parts = {}
        for row, name, email, item, payment in found:
            _, _, _, items, payments = parts.setdefault(
                row.id, (row, name or "", email or "", {}, {})
            )
            if item is not None:
                items[item.position] = item
            if payment is not None:
                payments[payment.id] = payment
        for row, _, _, _, payments in parts.values():
            self._rows[row.id] = row
            self._payment_ids[row.id] = set(payments)
        return [
            _order(row, list(items.values()), list(payments.values()), name, email)
            for row, name, email, items, payments in parts.values()
        ]


# the columns of an outer join's other side come back as None when nothing matched
_WholeOrderRow = tuple[OrderRow, str | None, str | None, OrderItemRow | None, PaymentRow | None]


def _whole_orders() -> Select[OrderRow, str, str, OrderItemRow, PaymentRow]:
    """Orders with their customer's name and email from the snapshot (none yet: NULL), their
    lines and their payments, in one statement: a row for each pair of an order's line and
    payment."""
    # sqlmodel types select() for up to four entities
    every: Select[OrderRow, str, str, OrderItemRow, PaymentRow] = select(  # type: ignore[call-overload]
        OrderRow, CustomerRow.full_name, CustomerRow.email, OrderItemRow, PaymentRow
    )
    return _joined(every)


Query = TypeVar("Query", bound=Select[*tuple[Any, ...]])


def _joined(query: Query) -> Query:
    """The outer joins that add customers, lines and payments to a select of orders."""
    return (
        query.join(CustomerRow, col(CustomerRow.id) == col(OrderRow.customer_id), isouter=True)
        .join(OrderItemRow, col(OrderItemRow.order_id) == col(OrderRow.id), isouter=True)
        .join(PaymentRow, col(PaymentRow.order_id) == col(OrderRow.id), isouter=True)
    )


def _by_id(
    *, for_update: bool, in_mode: bool
) -> Select[OrderRow, str, str, OrderItemRow, PaymentRow]:
    """The statement of get, for the bound parameters order_id (and saga_mode)."""
    query = _whole_orders().where(col(OrderRow.id) == sa.bindparam("order_id"))
    if in_mode:
        query = query.where(col(OrderRow.saga_mode) == sa.bindparam("saga_mode"))
    # the order's row only: PostgreSQL locks no row of a join's nullable side
    return query.with_for_update(of=OrderRow) if for_update else query


def _with_saga() -> Select[OrderRow, str, str, OrderItemRow, PaymentRow, SagaRow]:
    """The statement of get_with_saga, for the bound parameter order_id."""
    # sqlmodel types select() for up to four entities
    every: Select[OrderRow, str, str, OrderItemRow, PaymentRow, SagaRow] = select(  # type: ignore[call-overload]
        OrderRow, CustomerRow.full_name, CustomerRow.email, OrderItemRow, PaymentRow, SagaRow
    )
    query = _joined(every).join(SagaRow, col(SagaRow.order_id) == col(OrderRow.id))
    return query.where(col(OrderRow.id) == sa.bindparam("order_id"))


# Built once, as every order's saga reads its order several times: building these joins (and
# their cache keys) costs more than running them.
_BY_ID = {
    (for_update, in_mode): _by_id(for_update=for_update, in_mode=in_mode)
    for for_update in (False, True)
    for in_mode in (False, True)
}
_WITH_SAGA = _with_saga()
# the order's row first, then its saga's
_WITH_SAGA_FOR_UPDATE = _WITH_SAGA.with_for_update(of=[OrderRow, SagaRow])
