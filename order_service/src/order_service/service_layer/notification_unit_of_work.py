"""The unit of work of webhooks and emails: one transaction around their repositories."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.unit_of_work import SqlTransaction, UnitOfWork

from order_service.adapters.customer_contacts import SqlCustomerContacts
from order_service.adapters.notification_repository import EmailRepository, SqlEmailRepository
from order_service.adapters.webhook_repository import (
    DeliveryRepository,
    SqlDeliveryRepository,
    SqlWebhookRepository,
    WebhookRepository,
)
from order_service.service_layer.notification_ports import CustomerContacts


class AbstractNotificationUnitOfWork(UnitOfWork):
    """`async with uow:` opens a transaction; `commit()` keeps it, leaving rolls back the rest."""

    webhooks: WebhookRepository
    deliveries: DeliveryRepository
    emails: EmailRepository
    # the customer snapshot, read only
    contacts: CustomerContacts


class SqlNotificationUnitOfWork(SqlTransaction, AbstractNotificationUnitOfWork):
    def __init__(self, sessions: async_sessionmaker[AsyncSession], *, skip_locked: bool) -> None:
        super().__init__(sessions)
        self._skip_locked = skip_locked

    def _bind(self, session: AsyncSession) -> None:
        self.webhooks = SqlWebhookRepository(session)
        self.deliveries = SqlDeliveryRepository(session, skip_locked=self._skip_locked)
        self.emails = SqlEmailRepository(session, skip_locked=self._skip_locked)
        self.contacts = SqlCustomerContacts(session)
