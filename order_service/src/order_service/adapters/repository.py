"""Where orders are kept: the repository port and its SQL implementation."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from order_service.adapters.orm import CustomerRow, OrderItemRow, OrderRow, PaymentRow
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
    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        """The order, or None; for_update locks it until the transaction ends."""

    @abc.abstractmethod
    async def save(self, order: Order) -> None:
        """Store a loaded order's status and its new payments."""

    @abc.abstractmethod
    async def pending_of(self, customer_id: str) -> list[Order]:
        """The customer's PENDING orders."""


def utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; every time this service stores is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _order_row(order: Order) -> OrderRow:
    return OrderRow(
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


def _payment_row(payment: Payment) -> PaymentRow:
    return PaymentRow(
        id=payment.id,
        order_id=payment.order_id,
        status=payment.status.value,
        amount_cents=payment.amount_cents,
        provider_reference=payment.provider_reference,
        create_time=payment.create_time,
    )


def _order(
    row: OrderRow,
    items: Sequence[OrderItemRow],
    payments: Sequence[PaymentRow],
    customer_name: str,
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


class SqlOrderRepository(OrderRepository):
    """Orders in the service's SQL database (SQLite or PostgreSQL)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, order: Order) -> None:
        self._session.add(_order_row(order))
        # The order row goes first: SQLite checks the items' foreign keys as they are inserted.
        await self._session.flush()
        self._session.add_all(
            OrderItemRow(
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

    async def get(self, order_id: str, *, for_update: bool = False) -> Order | None:
        query = select(OrderRow).where(OrderRow.id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.exec(query)).first()
        if row is None:
            return None
        orders = await self._assemble([row])
        return orders[0]

    async def save(self, order: Order) -> None:
        row = await self._session.get(OrderRow, order.id)
        if row is None:
            raise LookupError(f"order {order.id} was never added")
        row.status = order.status.value
        row.status_reason = order.status_reason
        row.update_time = order.update_time
        self._session.add(row)
        stored = set(
            (
                await self._session.exec(
                    select(PaymentRow.id).where(PaymentRow.order_id == order.id)
                )
            ).all()
        )
        self._session.add_all(_payment_row(p) for p in order.payments if p.id not in stored)

    async def pending_of(self, customer_id: str) -> list[Order]:
        query = select(OrderRow).where(
            OrderRow.customer_id == customer_id, OrderRow.status == OrderStatus.PENDING.value
        )
        return await self._assemble((await self._session.exec(query)).all())

    async def _assemble(self, rows: Sequence[OrderRow]) -> list[Order]:
        ids = [row.id for row in rows]
        if not ids:
            return []
        items = (
            await self._session.exec(
                select(OrderItemRow).where(col(OrderItemRow.order_id).in_(ids))
            )
        ).all()
        payments = (
            await self._session.exec(select(PaymentRow).where(col(PaymentRow.order_id).in_(ids)))
        ).all()
        customer_ids = {row.customer_id for row in rows}
        names = {
            c.id: c.full_name
            for c in (
                await self._session.exec(
                    select(CustomerRow).where(col(CustomerRow.id).in_(customer_ids))
                )
            ).all()
        }
        return [
            _order(
                row,
                [i for i in items if i.order_id == row.id],
                [p for p in payments if p.order_id == row.id],
                names.get(row.customer_id, ""),
            )
            for row in rows
        ]
