"""The unit of work: one database transaction around the repositories a use case needs, and
the domain events that transaction publishes (through the transactional outbox)."""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform import outbox
from tienda_platform.unit_of_work import SqlTransaction, UnitOfWork

from product_service.adapters.repository import (
    AbstractProductRepository,
    AbstractReservationRepository,
    SqlProductRepository,
    SqlReservationRepository,
)

EVENT_SOURCE = "product_service"


class AbstractUnitOfWork(UnitOfWork):
    """Use as `async with uow:`; nothing is kept unless `commit()` is awaited inside.

    After `rollback()` the same unit of work may be used again: a new transaction begins.
    """

    products: AbstractProductRepository
    reservations: AbstractReservationRepository

    @abc.abstractmethod
    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        """Publish an event if, and only if, this transaction commits."""


class _SessionBacked(AbstractUnitOfWork):
    """Repositories and the outbox over one SQLAlchemy session."""

    _session: AsyncSession | None = None

    def _bind(self, session: AsyncSession) -> None:
        self._session = session
        self.products = SqlProductRepository(session)
        self.reservations = SqlReservationRepository(session)

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        assert self._session is not None, "record_event() outside `async with`"
        outbox.record_event(
            self._session,
            source=EVENT_SOURCE,
            event_type=event_type,
            subject=subject,
            payload=payload,
        )


class SqlUnitOfWork(_SessionBacked, SqlTransaction):
    """A transaction of its own; `on_events` runs after a commit that recorded events (it
    wakes the outbox relay)."""


class SessionUnitOfWork(_SessionBacked):
    """A unit of work inside a transaction someone else owns: an event consumer's, which
    commits the handler's effects, their outbox rows and the processed-event record together.

    Each `async with` is a SAVEPOINT, so `rollback()` undoes only this unit's work (the stock a
    rejected reservation took, say) and `commit()` keeps it for the owner's commit.
    """

    def __init__(self, session: AsyncSession) -> None:
        self._outer = session
        self._savepoint: AsyncSessionTransaction | None = None

    async def __aenter__(self) -> Self:
        self._bind(self._outer)
        self._savepoint = await self._outer.begin_nested()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._savepoint is not None and self._savepoint.is_active:
            await self._savepoint.rollback()
        self._savepoint = None

    async def commit(self) -> None:
        assert self._savepoint is not None, "commit() outside `async with`"
        await self._savepoint.commit()
        self._savepoint = None

    async def rollback(self) -> None:
        if self._savepoint is not None:
            await self._savepoint.rollback()
        # The unit of work may go on: a new savepoint stands in for a new transaction.
        self._savepoint = await self._outer.begin_nested()
