"""The read model's storage: order summaries and the customer names they show."""

from __future__ import annotations

import abc
import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select
from tienda_platform.database import new_row

from order_service.adapters.orm import OrderSummaryRow, SummaryCustomerRow
from order_service.adapters.repository import utc
from order_service.domain.customers import Customer
from order_service.domain.model import OrderLine, OrderStatus
from order_service.domain.summary import OrderSummary


class SummaryRepository(abc.ABC):
    """Order summaries, and the read model's own copy of customer names."""

    @abc.abstractmethod
    async def get(self, order_id: str, *, for_update: bool = False) -> OrderSummary | None:
        """The summary of the order, or None; for_update locks it until the transaction ends
        (two replicas' events about one order then change it one after the other)."""

    @abc.abstractmethod
    async def save(self, summary: OrderSummary) -> None:
        """Insert or replace a summary."""

    @abc.abstractmethod
    async def list_newest_first(
        self, *, customer_id: str | None, before_id: str | None, limit: int
    ) -> list[OrderSummary]:
        """Up to limit summaries (of one customer, or all), newest first, older than before_id."""

    @abc.abstractmethod
    async def get_customer(self, customer_id: str) -> Customer | None:
        """The read model's snapshot of a customer (no email: it shows names only)."""

    @abc.abstractmethod
    async def save_customer(self, customer: Customer) -> None:
        """Store the customer's name (every summary of theirs shows it from now on)."""


def _lines_json(lines: list[OrderLine]) -> str:
    return json.dumps(
        [
            {
                "product_id": line.product_id,
                "product_name": line.product_name,
                "quantity": line.quantity,
                "unit_price_cents": line.unit_price_cents,
            }
            for line in lines
        ],
        ensure_ascii=False,
    )


def _summary(row: OrderSummaryRow, customer_name: str | None) -> OrderSummary:
    return OrderSummary(
        order_id=row.order_id,
        customer_id=row.customer_id,
        customer_name=customer_name or "",
        status=OrderStatus(row.status),
        status_reason=row.status_reason,
        total_cents=row.total_cents,
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        lines=[OrderLine(**line) for line in json.loads(row.lines)],
    )


def _stored(value: Any) -> Any:
    """A column's value as the domain has it (SQLite hands back naive UTC datetimes)."""
    return utc(value) if isinstance(value, datetime) else value


def _with_names() -> Select[OrderSummaryRow, str]:
    return select(OrderSummaryRow, SummaryCustomerRow.full_name).join(
        SummaryCustomerRow,
        col(SummaryCustomerRow.id) == col(OrderSummaryRow.customer_id),
        isouter=True,
    )


# Built once (each order's events read its summary twice): a statement's construction costs
# more than its execution. SQLite has no FOR UPDATE: its writers hold the database's lock.
_BY_ID = _with_names().where(col(OrderSummaryRow.order_id) == sa.bindparam("order_id"))
_BY_ID_FOR_UPDATE = _BY_ID.with_for_update(of=OrderSummaryRow)


class SqlSummaryRepository(SummaryRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        # what get() found in this session, a row or None: saving then writes without
        # reading again (the identity map alone keeps a row only while it is referenced)
        self._found: dict[str, OrderSummaryRow | None] = {}

    async def get(self, order_id: str, *, for_update: bool = False) -> OrderSummary | None:
        query = _BY_ID_FOR_UPDATE if for_update else _BY_ID
        found = (await self._session.exec(query, params={"order_id": order_id})).first()
        self._found[order_id] = found[0] if found is not None else None
        return _summary(*found) if found is not None else None

    async def save(self, summary: OrderSummary) -> None:
        values: dict[str, Any] = {
            "customer_id": summary.customer_id,
            "status": summary.status.value,
            "status_reason": summary.status_reason,
            "lines": _lines_json(summary.lines),
            "total_cents": summary.total_cents,
            "create_time": summary.create_time,
            "update_time": summary.update_time,
        }
        if summary.order_id not in self._found:
            await self._session.merge(new_row(OrderSummaryRow, order_id=summary.order_id, **values))
            return
        row = self._found[summary.order_id]
        if row is None:
            row = new_row(OrderSummaryRow, order_id=summary.order_id, **values)
            self._found[summary.order_id] = row
        else:
            for name, value in values.items():
                if _stored(getattr(row, name)) != value:  # only what changed is written
                    setattr(row, name, value)
        self._session.add(row)

    async def list_newest_first(
        self, *, customer_id: str | None, before_id: str | None, limit: int
    ) -> list[OrderSummary]:
        query = _with_names().order_by(col(OrderSummaryRow.order_id).desc()).limit(limit)
        if customer_id is not None:
            query = query.where(OrderSummaryRow.customer_id == customer_id)
        if before_id is not None:
            query = query.where(col(OrderSummaryRow.order_id) < before_id)
        return [_summary(row, name) for row, name in (await self._session.exec(query)).all()]

    async def get_customer(self, customer_id: str) -> Customer | None:
        row = await self._session.get(SummaryCustomerRow, customer_id)
        if row is None:
            return None
        return Customer(
            id=row.id,
            email="",
            full_name=row.full_name,
            deleted=row.deleted,
            version_time=utc(row.version_time),
        )

    async def save_customer(self, customer: Customer) -> None:
        await self._session.merge(
            SummaryCustomerRow(
                id=customer.id,
                full_name=customer.full_name,
                deleted=customer.deleted,
                version_time=customer.version_time,
            )
        )
