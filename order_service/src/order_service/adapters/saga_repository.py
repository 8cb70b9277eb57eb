"""The saga log: the port and its SQL implementation."""

from __future__ import annotations

import abc
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import new_row
from tienda_platform.telemetry import current_traceparent

from order_service.adapters.orm import SagaRow
from order_service.adapters.repository import utc
from order_service.domain.model import SagaMode
from order_service.domain.saga import Saga, SagaStep


class SagaRepository(abc.ABC):
    """Sagas by order id."""

    @abc.abstractmethod
    async def add(self, saga: Saga) -> None:
        """Store a new saga, with the trace context of the current span as its trace parent
        (set on `saga` too, so that it is the saga as stored)."""

    @abc.abstractmethod
    async def get(self, order_id: str, *, for_update: bool = False) -> Saga | None:
        """The order's saga, or None; for_update locks it until the transaction ends."""

    @abc.abstractmethod
    async def save(self, saga: Saga) -> None:
        """Store a loaded saga's progress."""

    @abc.abstractmethod
    async def claim_due(
        self, *, worker: str, now: datetime, until: datetime, limit: int
    ) -> list[str]:
        """Claim up to limit sagas due by now for worker until `until`; their order ids."""

    @abc.abstractmethod
    async def unclaim_all(self, *, worker: str, now: datetime) -> None:
        """Hand back every claim of worker: its sagas are due again at once."""


# session.info key: the transaction stored a saga that no worker holds (unclaimed, not done),
# so the saga worker may have work. A saga stored with a claim is its worker's already.
SAGA_DUE = "order_service.saga_due"


def _mark_if_due(session: AsyncSession, saga: Saga) -> None:
    if not saga.claimed_by and not saga.is_done:
        session.info[SAGA_DUE] = True


def _row(saga: Saga) -> SagaRow:
    return new_row(
        SagaRow,
        order_id=saga.order_id,
        mode=saga.mode.value,
        step=saga.step.value,
        reason=saga.reason,
        attempts=saga.attempts,
        next_attempt_time=saga.next_attempt_time,
        last_error=saga.last_error,
        claimed_by=saga.claimed_by,
        create_time=saga.create_time,
        update_time=saga.update_time,
        trace_parent=saga.trace_parent,
    )


def _saga(row: SagaRow) -> Saga:
    return Saga(
        order_id=row.order_id,
        mode=SagaMode(row.mode),
        step=SagaStep(row.step),
        reason=row.reason,
        attempts=row.attempts,
        next_attempt_time=utc(row.next_attempt_time) if row.next_attempt_time else None,
        last_error=row.last_error,
        claimed_by=row.claimed_by,
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        trace_parent=row.trace_parent,
    )


_SAGAS = SagaRow.__table__  # type: ignore[attr-defined]
# Built once, as every step of every order runs it; it sets the columns its parameters name.
_SAVE_PROGRESS = sa.update(_SAGAS).where(_SAGAS.c.order_id == sa.bindparam("key"))


class SqlSagaRepository(SagaRepository):
    """Sagas in the service's SQL database."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        # the rows loaded in this session: saving updates them instead of reading them again
        # (the identity map alone keeps a row only while something references it)
        self._rows: dict[str, SagaRow] = {}

    async def add(self, saga: Saga) -> None:
        _mark_if_due(self._session, saga)
        saga.trace_parent = current_traceparent()
        row = _row(saga)
        self._session.add(row)
        self._rows[saga.order_id] = row

    async def get(self, order_id: str, *, for_update: bool = False) -> Saga | None:
        query = select(SagaRow).where(SagaRow.order_id == order_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.exec(query)).first()
        return None if row is None else self.loaded(row)

    def loaded(self, row: SagaRow) -> Saga:
        """The saga of a row read in this session (by this repository or with its order)."""
        self._rows[row.order_id] = row
        return _saga(row)

    async def save(self, saga: Saga) -> None:
        _mark_if_due(self._session, saga)
        row = self._rows.get(saga.order_id)
        if row is None:
            await self._session.merge(_row(saga))
            return
        # the saga's progress; its mode, creation and trace never change
        progress = {
            "step": saga.step.value,
            "reason": saga.reason,
            "attempts": saga.attempts,
            "next_attempt_time": saga.next_attempt_time,
            "last_error": saga.last_error,
            "claimed_by": saga.claimed_by,
            "update_time": saga.update_time,
        }
        # Written by one UPDATE, now (a saga added in this transaction is flushed first), and
        # the loaded row takes the values as its committed state: the unit of work's
        # bookkeeping for a changed row, at every step of every order, cost more than the
        # statement.
        await self._session.exec(_SAVE_PROGRESS, params={"key": saga.order_id, **progress})
        for name, value in progress.items():
            set_committed_value(row, name, value)

    async def claim_due(
        self, *, worker: str, now: datetime, until: datetime, limit: int
    ) -> list[str]:
        query = (
            select(SagaRow)
            .where(col(SagaRow.next_attempt_time) <= now)
            .order_by(col(SagaRow.next_attempt_time))
            .limit(limit)
            # replicas claim different sagas instead of queueing on the same rows (PostgreSQL;
            # SQLite has no row locks: its write transactions run one at a time)
            .with_for_update(skip_locked=True)
        )
        rows = (await self._session.exec(query)).all()
        for row in rows:
            self._rows[row.order_id] = row
            saga = _saga(row)
            saga.claim(worker=worker, until=until, now=now)
            await self.save(saga)
        return [row.order_id for row in rows]

    async def unclaim_all(self, *, worker: str, now: datetime) -> None:
        await self._session.exec(
            sa.update(SagaRow)
            .where(col(SagaRow.claimed_by) == worker, col(SagaRow.next_attempt_time).is_not(None))
            .values(claimed_by="", next_attempt_time=now)
        )
