"""What every service's unit of work does alike.

`async with uow:` opens one database transaction around the repositories a use case needs,
`commit()` keeps it, and leaving the block rolls back whatever was not committed. A service's
unit of work names its repositories (`_bind`) and the events it records; the events go to the
transactional outbox, in the same transaction as the change they announce.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from tienda_platform.outbox import take_recorded


class UnitOfWork(abc.ABC):
    """`async with uow:` opens a transaction; `commit()` keeps it, leaving rolls back the rest."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.rollback()

    @abc.abstractmethod
    async def commit(self) -> None:
        """Make the transaction's changes durable."""

    @abc.abstractmethod
    async def rollback(self) -> None:
        """Drop the transaction's uncommitted changes."""


class SqlTransaction(UnitOfWork):
    """A transaction of its own, on a new session from `sessions` each time the unit of work
    is entered (one instance may serve several transactions in a row, never two at once).

    `on_events` runs after a commit that recorded events, to wake the outbox relay: waking it
    after every commit would cost it a transaction that finds nothing to do.
    """

    _session: AsyncSession | None = None

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        on_events: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._on_events = on_events

    @abc.abstractmethod
    def _bind(self, session: AsyncSession) -> None:
        """Set the repositories up over the session of the transaction."""

    def _live(self) -> AsyncSession:
        assert self._session is not None, "the unit of work is used outside `async with`"
        return self._session

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._bind(self._session)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, traceback)
        finally:
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def commit(self) -> None:
        session = self._live()
        events = take_recorded(session)
        await session.commit()
        if events and self._on_events is not None:
            self._on_events()

    async def rollback(self) -> None:
        if self._session is not None:
            take_recorded(self._session)  # what was recorded is gone with the rest
            await self._session.rollback()
