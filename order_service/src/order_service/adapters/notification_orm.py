"""Tables of outgoing emails and the registration counter (in order_service's registry)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Field

from order_service.adapters.orm import OrderTable


class OutgoingEmailRow(OrderTable, table=True):
    """An email to send, one per event: the key makes a redelivered event a no-op, and the
    status makes a restarted mailer skip what it already sent."""

    __tablename__ = "outgoing_emails"

    event_id: str = Field(primary_key=True, max_length=36)
    recipient: str = Field(sa_type=sa.Text)
    subject: str = Field(sa_type=sa.Text)
    body: str = Field(sa_type=sa.Text)
    status: str = Field(max_length=16)
    attempts: int
    last_error: str = Field(sa_type=sa.Text)
    next_attempt_time: datetime | None = Field(
        default=None,
        sa_type=sa.DateTime(timezone=True),
        index=True,
    )
    create_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
    sent_time: datetime | None = Field(
        default=None,
        sa_type=sa.DateTime(timezone=True),
    )
    # the user and the order the email is about ("" for none)
    user_id: str = Field(default="", max_length=36, sa_column_kwargs={"server_default": ""})
    order_id: str = Field(default="", max_length=36, sa_column_kwargs={"server_default": ""})
    # W3C traceparent of the span that created the row: later work joins that trace.
    trace_parent: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})


class RegistrationStatsRow(OrderTable, table=True):
    """Named counters of registrations; the migration creates the "registrations" row."""

    __tablename__ = "registration_stats"

    name: str = Field(primary_key=True, max_length=64)
    value: int = Field(sa_type=sa.BigInteger)
    update_time: datetime = Field(sa_type=sa.DateTime(timezone=True))
