"""The unit of work of webhooks and emails: one transaction around their repositories."""

from __future__ import annotations

import abc
from types import TracebackType

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from order_service.adapters.notification_repository import EmailRepository, SqlEmailRepository
from order_service.adapters.webhook_repository import (
    DeliveryRepository,
    SqlDeliveryRepository,
    SqlWebhookRepository,
    WebhookRepository,
)


class AbstractNotificationUnitOfWork(abc.ABC):
    """`async with uow:` opens a transaction; `commit()` keeps it, leaving rolls back the rest."""

    webhooks: WebhookRepository
    deliveries: DeliveryRepository
    emails: EmailRepository

    async def __aenter__(self) -> AbstractNotificationUnitOfWork:
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


class SqlNotificationUnitOfWork(AbstractNotificationUnitOfWork):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, skip_locked: bool) -> None:
        self._sessions = sessions
        self._skip_locked = skip_locked
        self._session: AsyncSession | None = None

    async def __aenter__(self) -> AbstractNotificationUnitOfWork:
        self._session = self._sessions()
        self.webhooks = SqlWebhookRepository(self._session)
        self.deliveries = SqlDeliveryRepository(self._session, skip_locked=self._skip_locked)
        self.emails = SqlEmailRepository(self._session, skip_locked=self._skip_locked)
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
        assert self._session is not None, "commit outside `async with uow`"
        await self._session.commit()

    async def rollback(self) -> None:
        if self._session is not None:
            await self._session.rollback()
