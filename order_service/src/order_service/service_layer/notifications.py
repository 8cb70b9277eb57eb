"""Notification use cases run by event consumers: queue welcome and order emails, count
registrations. Emails are only queued here (in the event's transaction); the EmailWorker
sends them, so no database transaction waits on a mail server."""

from __future__ import annotations

from datetime import datetime

from loguru import logger
from prometheus_client import Counter

from order_service.adapters.notification_repository import EmailRepository, RegistrationCounter
from order_service.domain.notifications import Email, order_email, welcome_email
from order_service.service_layer.notification_ports import CustomerContacts

REGISTRATIONS = Counter(
    "tienda_registrations", "Users registered, as counted from user.registered."
)


class CustomerNotKnownYet(Exception):
    """The customer snapshot has not caught up with this customer: retry the event later."""


async def queue_welcome_email(
    *,
    emails: EmailRepository,
    event_id: str,
    user_id: str,
    recipient: str,
    full_name: str,
    now: datetime,
) -> None:
    """Queue the welcome email of a new user."""
    subject, body = welcome_email(full_name=full_name)
    await emails.add(
        Email.new(
            event_id=event_id,
            recipient=recipient,
            subject=subject,
            body=body,
            now=now,
            user_id=user_id,
        )
    )


async def queue_order_email(
    *,
    emails: EmailRepository,
    contacts: CustomerContacts,
    event_id: str,
    event_type: str,
    order_id: str,
    customer_id: str,
    reason: str,
    total_cents: int,
    now: datetime,
) -> None:
    """Queue the email telling a customer their order reached a terminal state."""
    contact = await contacts.contact_of(customer_id)
    if contact is None:
        raise CustomerNotKnownYet(f"no customer snapshot of {customer_id} yet")
    if contact.deleted or not contact.email:
        logger.info("no order email: the customer deleted their account", order_id=order_id)
        return
    subject, body = order_email(
        event_type=event_type,
        full_name=contact.full_name,
        order_id=order_id,
        reason=reason,
        total_cents=total_cents,
    )
    await emails.add(
        Email.new(
            event_id=event_id,
            recipient=contact.email,
            subject=subject,
            body=body,
            now=now,
            user_id=customer_id,
            order_id=order_id,
        )
    )


async def count_registration(*, counter: RegistrationCounter, now: datetime) -> int:
    """One more registration in the stored counter; returns the new total."""
    return await counter.increment(now=now)
