"""Tables of webhooks and their deliveries (in order_service's registry, see orm.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from order_service.adapters.orm import OrderTable


class WebhookRow(OrderTable, table=True):
    __tablename__ = "webhooks"
    # A customer's webhooks newest first (UUIDv7 ids sort by time).
    __table_args__ = (sa.Index("ix_webhooks_owner_id_id", "owner_id", "id"),)

    id: str = Field(primary_key=True, max_length=36)
    owner_id: str = Field(max_length=64)
    receives_all: bool
    url: str = Field(sa_type=sa.Text)
    # Comma-separated event types: a handful of known names, never queried by the database.
    event_types: str = Field(sa_type=sa.Text)
    # Kept in clear: signing needs the key itself. It is never logged nor returned after creation.
    secret: str = Field(max_length=64)
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))


class WebhookDeliveryRow(OrderTable, table=True):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        sa.UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_webhook_event"),
        sa.Index("ix_webhook_deliveries_webhook_id_id", "webhook_id", "id"),
    )

    id: str = Field(primary_key=True, max_length=36)
    webhook_id: str = Field(foreign_key="webhooks.id", max_length=36)
    event_id: str = Field(max_length=36)
    event_type: str = Field(max_length=64)
    # The exact JSON sent on every attempt (its signature covers these bytes).
    body: str = Field(sa_type=sa.Text)
    status: str = Field(max_length=16)
    attempts: int
    last_status_code: int
    last_error: str = Field(sa_type=sa.Text)
    # NULL once the delivery is finished, so the worker's index holds only live deliveries.
    next_attempt_time: datetime | None = Field(
        default=None,
        sa_type=sa.DateTime(timezone=True),
        index=True,
    )
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    update_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    # the order the event is about
    order_id: str = Field(default="", max_length=36, sa_column_kwargs={"server_default": ""})
    # W3C traceparent of the span that created the row: later work joins that trace.
    trace_parent: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
