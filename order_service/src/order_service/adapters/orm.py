"""order_service's tables.

They hang off a registry (and so a MetaData) of their own rather than SQLModel's global one:
several services' models can share one test process, and each service's migrations must
compare against its own tables only.
"""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class OrderTable(SQLModel, registry=registry()):
    """Base of order_service's tables."""


metadata = OrderTable.metadata


class OrderRow(OrderTable, table=True):
    __tablename__ = "orders"
    # Listing a customer's orders newest first walks this index (UUIDv7 ids sort by time).
    __table_args__ = (sa.Index("ix_orders_customer_id_id", "customer_id", "id"),)

    id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    status_reason: str = Field(default="", sa_type=sa.Text)
    total_cents: int = Field(sa_type=sa.BigInteger)
    payment_token: str = Field(max_length=128)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    update_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    # Orders placed before saga modes existed were orchestrated.
    saga_mode: str = Field(
        default="orchestration",
        max_length=16,
        sa_column_kwargs={"server_default": "orchestration"},
    )


class OrderRequestRow(OrderTable, table=True):
    """A request that placed an order and named itself (CreateOrderRequest.request_id): the
    same request again answers with that order."""

    __tablename__ = "order_requests"

    customer_id: str = Field(primary_key=True, max_length=64)
    request_id: str = Field(primary_key=True, max_length=64)
    order_id: str = Field(foreign_key="orders.id", max_length=36)
    # CreateOrder.fingerprint: a different request under the same request_id is refused
    fingerprint: str = Field(max_length=64)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class OrderItemRow(OrderTable, table=True):
    __tablename__ = "order_items"

    order_id: str = Field(foreign_key="orders.id", primary_key=True, max_length=36)
    product_id: str = Field(primary_key=True, max_length=36)
    # Keeps the lines in the order the customer gave them.
    position: int
    product_name: str = Field(sa_type=sa.Text)
    quantity: int
    unit_price_cents: int = Field(sa_type=sa.BigInteger)


class PaymentRow(OrderTable, table=True):
    __tablename__ = "payments"

    id: str = Field(primary_key=True, max_length=36)
    order_id: str = Field(foreign_key="orders.id", index=True, max_length=36)
    status: str = Field(max_length=16)
    amount_cents: int = Field(sa_type=sa.BigInteger)
    provider_reference: str = Field(default="", max_length=128)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class SagaRow(OrderTable, table=True):
    """The saga log: one row per order whose saga order_service drives or takes part in."""

    __tablename__ = "order_sagas"

    order_id: str = Field(foreign_key="orders.id", primary_key=True, max_length=36)
    mode: str = Field(max_length=16)
    step: str = Field(max_length=16)
    reason: str = Field(default="", sa_type=sa.Text)
    attempts: int = 0
    # NULL once the saga is done, so the worker's index holds only live sagas.
    next_attempt_time: datetime | None = Field(
        default=None,
        sa_type=sa.DateTime(timezone=True),
        index=True,
    )
    last_error: str = Field(default="", sa_type=sa.Text)
    claimed_by: str = Field(default="", max_length=128)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    update_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    # W3C traceparent of the span that created the row: later work joins that trace.
    trace_parent: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})


class PaymentChargeRow(OrderTable, table=True):
    """The simulated payment provider's own record of its answers, by idempotency key."""

    __tablename__ = "payment_charges"

    idempotency_key: str = Field(primary_key=True, max_length=80)
    kind: str = Field(max_length=8)  # charge or refund
    approved: bool
    amount_cents: int = Field(sa_type=sa.BigInteger)
    provider_reference: str = Field(max_length=128)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class CustomerRow(OrderTable, table=True):
    """The customer snapshot, replicated from auth_service's user events."""

    __tablename__ = "customers"

    id: str = Field(primary_key=True, max_length=64)
    email: str = Field(sa_type=sa.Text)
    full_name: str = Field(sa_type=sa.Text)
    deleted: bool = False
    version_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class OrderSummaryRow(OrderTable, table=True):
    """The read model of ListOrders, fed only by events (CQRS)."""

    __tablename__ = "order_summaries"
    __table_args__ = (
        sa.Index("ix_order_summaries_customer_id_order_id", "customer_id", "order_id"),
    )

    order_id: str = Field(primary_key=True, max_length=36)
    customer_id: str = Field(max_length=64)
    status: str = Field(max_length=16)
    status_reason: str = Field(default="", sa_type=sa.Text)
    # The lines as JSON: [{product_id, product_name, quantity, unit_price_cents}, ...].
    lines: str = Field(default="[]", sa_type=sa.Text)
    total_cents: int = Field(default=0, sa_type=sa.BigInteger)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    update_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class SummaryCustomerRow(OrderTable, table=True):
    """Customer names as the read model heard them (it may not read the write model's).

    Summaries are joined with these names when read, not copied into them: an order event and
    a rename handled at the same moment could otherwise leave a summary with the old name."""

    __tablename__ = "order_summary_customers"

    id: str = Field(primary_key=True, max_length=64)
    full_name: str = Field(sa_type=sa.Text)
    deleted: bool = False
    version_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
