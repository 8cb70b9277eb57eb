"""A unit of work with one repository of the test's making: race tests hold concurrent
transactions at a barrier inside it, to force the interleaving that would break a rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Self

from auth_service.service_layer.unit_of_work import SqlUnitOfWork
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession


class InterleavingUnitOfWork(SqlUnitOfWork):
    """SqlUnitOfWork whose repository `name` (`refresh_tokens`, `signing_keys`, ...) is
    `repository(session)`."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        name: str,
        repository: Callable[[AsyncSession], Any],
    ) -> None:
        super().__init__(sessions)
        self._name = name
        self._repository = repository

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        assert self._session is not None
        setattr(self, self._name, self._repository(self._session))
        return self
