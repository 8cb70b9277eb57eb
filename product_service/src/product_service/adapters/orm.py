"""SQLModel tables of product_service's own database.

The tables use a registry of their own rather than SQLModel's global one: several services'
tables are imported into one test process, and each migration check must see only its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from product_service.domain.model import REASON_MAX_LENGTH


class ProductTable(SQLModel, registry=registry()):
    """Base of product_service's tables; `ProductTable.metadata` is what the migrations build."""


def _utc_column() -> Any:
    return Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=False))


class ProductRow(ProductTable, table=True):
    __tablename__ = "products"
    __table_args__ = (
        sa.UniqueConstraint("sku", name="uq_products_sku"),
        # The last line of defence: no code path, however concurrent, may oversell.
        sa.CheckConstraint("stock >= 0", name="ck_products_stock_not_negative"),
    )

    id: str = Field(sa_column=sa.Column(sa.String(36), primary_key=True))
    sku: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    description: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    price_cents: int = Field(sa_column=sa.Column(sa.BigInteger(), nullable=False))
    stock: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
    create_time: datetime = _utc_column()
    update_time: datetime = _utc_column()


class ReservationRow(ProductTable, table=True):
    __tablename__ = "reservations"
    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('RESERVED', 'REJECTED', 'RELEASED', 'COMMITTED')",
            name="ck_reservations_status",
        ),
    )

    order_id: str = Field(sa_column=sa.Column(sa.String(36), primary_key=True))
    status: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    reason: str = Field(sa_column=sa.Column(sa.String(REASON_MAX_LENGTH), nullable=False))
    create_time: datetime = _utc_column()
    update_time: datetime = _utc_column()


class ReservationItemRow(ProductTable, table=True):
    __tablename__ = "reservation_items"
    __table_args__ = (sa.CheckConstraint("quantity > 0", name="ck_reservation_items_quantity"),)

    order_id: str = Field(
        sa_column=sa.Column(
            sa.String(36),
            sa.ForeignKey(
                "reservations.order_id", name="fk_reservation_items_order_id", ondelete="CASCADE"
            ),
            primary_key=True,
        )
    )
    product_id: str = Field(
        sa_column=sa.Column(
            sa.String(36),
            sa.ForeignKey("products.id", name="fk_reservation_items_product_id"),
            primary_key=True,
        )
    )
    quantity: int = Field(sa_column=sa.Column(sa.Integer(), nullable=False))
