"""The unit of work: one database transaction around the repositories and the outbox.

An event recorded with `record_event` is written to the outbox in the same transaction as the
state change it announces: both commit, or neither does.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.outbox import record_event, take_recorded
from tienda_platform.unit_of_work import SqlTransaction, UnitOfWork

from order_service.adapters.customer_repository import CustomerRepository, SqlCustomerRepository
from order_service.adapters.repository import OrderRepository, SqlOrderRepository
from order_service.adapters.saga_repository import SAGA_DUE, SagaRepository, SqlSagaRepository
from order_service.adapters.summary_repository import SqlSummaryRepository, SummaryRepository
from order_service.domain.model import Order
from order_service.domain.saga import Saga

EVENT_SOURCE = "order_service"


def stored_due_saga(session: AsyncSession) -> bool:
    """Whether the session's transaction stored a saga that no worker holds (work for the saga
    worker); forgets it, for the next transaction."""
    return bool(session.info.pop(SAGA_DUE, False))


def gave_background_work(session: AsyncSession) -> bool:
    """Whether the session's transaction recorded events (work for the outbox relay) or stored
    a saga that no worker holds (work for the saga worker); forgets both."""
    return take_recorded(session) | stored_due_saga(session)


class AbstractUnitOfWork(UnitOfWork):
    """`async with uow:` opens a transaction; `commit()` keeps it, leaving rolls back the rest.

    One instance serves one use case; it may be entered several times in a row (the saga
    persists each step in its own transaction), never concurrently.
    """

    orders: OrderRepository
    sagas: SagaRepository
    customers: CustomerRepository
    summaries: SummaryRepository

    async def order_with_saga(
        self, order_id: str, *, for_update: bool = False
    ) -> tuple[Order, Saga] | None:
        """The order and its saga, or None when either is missing; for_update locks both
        (the order first, as everywhere) until the transaction ends."""
        order = await self.orders.get(order_id, for_update=for_update)
        saga = await self.sagas.get(order_id, for_update=for_update)
        return None if order is None or saga is None else (order, saga)

    @abc.abstractmethod
    def record_event(self, *, event_type: str, subject: str, payload: Message) -> datetime:
        """Publish an event if, and only if, this transaction commits; the event's time."""

    @abc.abstractmethod
    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run callback once this transaction has committed (never if it rolls back)."""


class _SessionBacked(AbstractUnitOfWork):
    """Repositories and outbox over one SQLAlchemy session."""

    _session: AsyncSession | None = None

    def _bind(self, session: AsyncSession) -> None:
        self._session = session
        self.orders = SqlOrderRepository(session)
        self.sagas = SqlSagaRepository(session)
        self.customers = SqlCustomerRepository(session)
        self.summaries = SqlSummaryRepository(session)

    async def order_with_saga(
        self, order_id: str, *, for_update: bool = False
    ) -> tuple[Order, Saga] | None:
        """Both in one statement."""
        assert isinstance(self.orders, SqlOrderRepository)
        assert isinstance(self.sagas, SqlSagaRepository)
        found = await self.orders.get_with_saga(order_id, for_update=for_update)
        if found is None:
            return None
        order, saga_row = found
        return order, self.sagas.loaded(saga_row)

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> datetime:
        assert self._session is not None, "record_event outside `async with uow`"
        envelope = record_event(
            self._session,
            source=EVENT_SOURCE,
            event_type=event_type,
            subject=subject,
            payload=payload,
        )
        return envelope.time.ToDatetime(tzinfo=UTC)

    def after_commit(self, callback: Callable[[], None]) -> None:
        assert self._session is not None, "after_commit outside `async with uow`"

        def run(_session: Any) -> None:
            callback()

        event.listen(self._session.sync_session, "after_commit", run, once=True)


class SqlUnitOfWork(_SessionBacked, SqlTransaction):
    """A unit of work over a session of its own. After a commit, `on_events` runs if the
    transaction recorded events (it wakes the outbox relay), and `on_saga_due` if it stored a
    saga that no worker holds (it wakes the saga worker). A saga step stored by the worker
    that holds the saga wakes nobody: the worker goes on with it at once, and a wake-up would
    only cost it a claim that finds nothing."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        on_events: Callable[[], None] | None = None,
        on_saga_due: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(sessions, on_events=on_events)
        self._on_saga_due = on_saga_due

    async def commit(self) -> None:
        saga_due = stored_due_saga(self._live())
        await super().commit()
        if saga_due and self._on_saga_due is not None:
            self._on_saga_due()

    async def rollback(self) -> None:
        if self._session is not None:
            stored_due_saga(self._session)  # what was stored is gone with the rest
        await super().rollback()


class SessionUnitOfWork(_SessionBacked):
    """A unit of work inside a transaction someone else owns: an event consumer's, which
    commits the handler's changes together with the processed-event record."""

    def __init__(self, session: AsyncSession) -> None:
        self._bind(session)

    async def commit(self) -> None:
        assert self._session is not None
        await self._session.flush()

    async def rollback(self) -> None:
        """The owner of the transaction rolls it back when the handler fails."""
