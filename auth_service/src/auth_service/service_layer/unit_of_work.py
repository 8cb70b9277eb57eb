"""The unit of work: one database transaction around the repositories a use case needs, and
the domain events that transaction publishes (through the transactional outbox)."""

from __future__ import annotations

import abc

from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform import outbox
from tienda_platform.unit_of_work import SqlTransaction, UnitOfWork

from auth_service.adapters.repository import (
    AbstractRefreshTokenRepository,
    AbstractSigningKeyRepository,
    AbstractUserRepository,
    SqlRefreshTokenRepository,
    SqlSigningKeyRepository,
    SqlUserRepository,
)

EVENT_SOURCE = "auth_service"


class AbstractUnitOfWork(UnitOfWork):
    """Use as `async with uow:`; nothing is kept unless `commit()` is awaited inside."""

    users: AbstractUserRepository
    refresh_tokens: AbstractRefreshTokenRepository
    signing_keys: AbstractSigningKeyRepository

    @abc.abstractmethod
    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        """Publish an event if, and only if, this transaction commits."""


class SqlUnitOfWork(SqlTransaction, AbstractUnitOfWork):
    """A SQL transaction; `on_events` runs after a commit that recorded events."""

    def _bind(self, session: AsyncSession) -> None:
        self.users = SqlUserRepository(session)
        self.refresh_tokens = SqlRefreshTokenRepository(session)
        self.signing_keys = SqlSigningKeyRepository(session)

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        outbox.record_event(
            self._live(),
            source=EVENT_SOURCE,
            event_type=event_type,
            subject=subject,
            payload=payload,
        )
