"""Customer contacts read from the customer snapshot (table customers, fed by user events)."""

from __future__ import annotations

from sqlmodel.ext.asyncio.session import AsyncSession

from order_service.adapters.orm import CustomerRow
from order_service.service_layer.notification_ports import Contact, CustomerContacts


class SqlCustomerContacts(CustomerContacts):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def contact_of(self, customer_id: str) -> Contact | None:
        row = await self._session.get(CustomerRow, customer_id)
        if row is None:
            return None
        return Contact(email=row.email, full_name=row.full_name, deleted=row.deleted)
