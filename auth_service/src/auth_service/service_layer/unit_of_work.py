"""The unit of work: one database transaction around the repositories a use case needs, and
the domain events that transaction publishes (through the transactional outbox)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType
from typing import Self

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform import outbox

from auth_service.adapters.repository import (
    AbstractRefreshTokenRepository,
    AbstractSigningKeyRepository,
    AbstractUserRepository,
    SqlRefreshTokenRepository,
    SqlSigningKeyRepository,
    SqlUserRepository,
)

EVENT_SOURCE = "auth_service"


class AbstractUnitOfWork(abc.ABC):
    """Use as `async with uow:`; nothing is kept unless `commit()` is awaited inside."""

    users: AbstractUserRepository
    refresh_tokens: AbstractRefreshTokenRepository
    signing_keys: AbstractSigningKeyRepository

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
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...

    @abc.abstractmethod
    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        """Publish an event if, and only if, this transaction commits."""


class SqlUnitOfWork(AbstractUnitOfWork):
    """A SQL transaction; `after_commit` runs after a commit that recorded events."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        after_commit: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._after_commit = after_commit
        self._recorded_events = False

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self._recorded_events = False
        self.users = SqlUserRepository(self._session)
        self.refresh_tokens = SqlRefreshTokenRepository(self._session)
        self.signing_keys = SqlSigningKeyRepository(self._session)
        return await super().__aenter__()

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
        assert self._session is not None, "commit() outside `async with`"
        await self._session.commit()
        if self._recorded_events:
            self._recorded_events = False
            if self._after_commit is not None:
                self._after_commit()

    async def rollback(self) -> None:
        self._recorded_events = False
        if self._session is not None:
            await self._session.rollback()

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        assert self._session is not None, "record_event() outside `async with`"
        outbox.record_event(
            self._session,
            source=EVENT_SOURCE,
            event_type=event_type,
            subject=subject,
            payload=payload,
        )
        self._recorded_events = True
