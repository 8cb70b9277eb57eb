"""Outgoing emails and the registration counter: ports and SQL implementations."""

from __future__ import annotations

import abc
from dataclasses import replace
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.telemetry import current_traceparent

from order_service.adapters.notification_orm import OutgoingEmailRow, RegistrationStatsRow
from order_service.adapters.webhook_repository import utc
from order_service.domain.notifications import Email, EmailStatus

REGISTRATIONS = "registrations"


class EmailRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, email: Email) -> None: ...

    @abc.abstractmethod
    async def get(self, event_id: str, *, for_update: bool = False) -> Email | None: ...

    @abc.abstractmethod
    async def save(self, email: Email) -> None: ...

    @abc.abstractmethod
    async def due(self, *, now: datetime, limit: int) -> list[Email]:
        """Pending emails whose time has come, locked for this transaction (rows another
        mailer holds are skipped)."""


class RegistrationCounter(abc.ABC):
    @abc.abstractmethod
    async def increment(self, *, now: datetime) -> int:
        """Count one more registration; returns the new total."""

    @abc.abstractmethod
    async def value(self) -> int: ...


def _email(row: OutgoingEmailRow) -> Email:
    return Email(
        event_id=row.event_id,
        recipient=row.recipient,
        subject=row.subject,
        body=row.body,
        status=EmailStatus(row.status),
        attempts=row.attempts,
        last_error=row.last_error,
        next_attempt_time=utc(row.next_attempt_time) if row.next_attempt_time else None,
        create_time=utc(row.create_time),
        sent_time=utc(row.sent_time) if row.sent_time else None,
        user_id=row.user_id,
        order_id=row.order_id,
        trace_parent=row.trace_parent,
    )


def _email_row(email: Email) -> OutgoingEmailRow:
    return OutgoingEmailRow(
        event_id=email.event_id,
        recipient=email.recipient,
        subject=email.subject,
        body=email.body,
        status=email.status.value,
        attempts=email.attempts,
        last_error=email.last_error,
        next_attempt_time=email.next_attempt_time,
        create_time=email.create_time,
        sent_time=email.sent_time,
        user_id=email.user_id,
        order_id=email.order_id,
        trace_parent=email.trace_parent,
    )


# session.info key: the transaction queued emails (the email worker has work).
EMAILS_ADDED = "order_service.emails_added"


class SqlEmailRepository(EmailRepository):
    def __init__(self, session: AsyncSession, *, skip_locked: bool) -> None:
        self._session = session
        # SQLite has no row locks: its writers take the database lock at BEGIN IMMEDIATE.
        self._skip_locked = skip_locked

    async def add(self, email: Email) -> None:
        self._session.info[EMAILS_ADDED] = True
        self._session.add(_email_row(replace(email, trace_parent=current_traceparent())))

    async def get(self, event_id: str, *, for_update: bool = False) -> Email | None:
        query = select(OutgoingEmailRow).where(OutgoingEmailRow.event_id == event_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.exec(query)).first()
        return None if row is None else _email(row)

    async def save(self, email: Email) -> None:
        await self._session.merge(_email_row(email))

    async def due(self, *, now: datetime, limit: int) -> list[Email]:
        query = (
            select(OutgoingEmailRow)
            .where(
                OutgoingEmailRow.status == EmailStatus.PENDING.value,
                col(OutgoingEmailRow.next_attempt_time) <= now,
            )
            .order_by(col(OutgoingEmailRow.next_attempt_time), col(OutgoingEmailRow.event_id))
            .limit(limit)
        )
        if self._skip_locked:
            query = query.with_for_update(skip_locked=True)
        return [_email(row) for row in (await self._session.exec(query)).all()]


class SqlRegistrationCounter(RegistrationCounter):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def increment(self, *, now: datetime) -> int:
        # One UPDATE: concurrent replicas queue on the row lock instead of losing a count.
        result = await self._session.exec(
            sa.update(RegistrationStatsRow)
            .where(col(RegistrationStatsRow.name) == REGISTRATIONS)
            .values(value=col(RegistrationStatsRow.value) + 1, update_time=now)
            .returning(col(RegistrationStatsRow.value))
        )
        value = result.scalar_one_or_none()
        if value is None:
            raise LookupError("registration_stats has no registrations row; run the migrations")
        return int(value)

    async def value(self) -> int:
        row = await self._session.get(RegistrationStatsRow, REGISTRATIONS)
        return 0 if row is None else row.value
