"""The customer snapshots of the write model: the port and its SQL implementation."""

from __future__ import annotations

import abc

import sqlalchemy as sa
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import advisory_lock_key

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

    @abc.abstractmethod
    async def hold(self, customer_id: str, *, exclusive: bool) -> None:
        """Keep other transactions about this customer apart from this one until it ends:
        placing an order holds the customer shared, the user events exclusively. A deletion
        then sees every order placed before it and no order is placed after it, and of two
        events handled at once by two replicas the older never overwrites the newer. Taken
        before the snapshot is read, it works whether or not a snapshot exists yet."""


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

    async def hold(self, customer_id: str, *, exclusive: bool) -> None:
        # on SQLite a writing transaction holds the database's write lock from its BEGIN
        # (BEGIN IMMEDIATE), which keeps it apart from every other writer already
        if self._session.get_bind().dialect.name != "postgresql":
            return
        lock = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        await self._session.exec(  # type: ignore[call-overload]
            sa.select(getattr(sa.func, lock)(advisory_lock_key(f"customers/{customer_id}")))
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
