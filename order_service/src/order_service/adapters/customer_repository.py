"""The customer snapshots of the write model: the port and its SQL implementation."""

from __future__ import annotations

import abc

from sqlmodel.ext.asyncio.session import AsyncSession

from order_service.adapters.orm import CustomerRow
from order_service.adapters.repository import utc
from order_service.domain.customers import Customer


class CustomerRepository(abc.ABC):
    """Customer snapshots by user id."""

    @abc.abstractmethod
    async def get(self, customer_id: str) -> Customer | None:
        """The snapshot, or None when no event about this user has arrived yet."""

    @abc.abstractmethod
    async def save(self, customer: Customer) -> None:
        """Insert or replace the snapshot."""


class SqlCustomerRepository(CustomerRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, customer_id: str) -> Customer | None:
        row = await self._session.get(CustomerRow, customer_id)
        if row is None:
            return None
        return Customer(
            id=row.id,
            email=row.email,
            full_name=row.full_name,
            deleted=row.deleted,
            version_time=utc(row.version_time),
        )

    async def save(self, customer: Customer) -> None:
        await self._session.merge(
            CustomerRow(
                id=customer.id,
                email=customer.email,
                full_name=customer.full_name,
                deleted=customer.deleted,
                version_time=customer.version_time,
            )
        )
