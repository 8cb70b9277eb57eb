"""Emails over fakes: what gets queued for which event, and the email worker's retries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from order_service.domain.notifications import EmailStatus
from order_service.service_layer import notifications
from order_service.service_layer.email_worker import EmailWorker
from order_service.service_layer.notification_ports import Contact
from tienda_platform.ids import new_id

from .notification_fakes import (
    Clock,
    FakeContacts,
    FakeEmails,
    FakeMailer,
    FakeNotificationUnitOfWork,
    Store,
    policy,
)

pytestmark = pytest.mark.unit


async def queue_order_email(
    store: Store, contacts: FakeContacts, customer_id: str, clock: Clock, **event: object
) -> str:
    event_id = new_id()
    await notifications.queue_order_email(
        emails=FakeEmails(store),
        contacts=contacts,
        event_id=event_id,
        event_type=str(event.get("event_type", "order.confirmed")),
        order_id="0190a0a0-0000-7000-8000-000000000001",
        customer_id=customer_id,
        reason=str(event.get("reason", "")),
        total_cents=2999,
        now=clock(),
    )
    return event_id


async def queue_welcome_email_e1(store: Store, clock: Clock) -> None:
    """The welcome email of user u-a (a@x.io), caused by event e1."""
    await notifications.queue_welcome_email(
        emails=FakeEmails(store),
        event_id="e1",
        user_id="u-a",
        recipient="a@x.io",
        full_name="A",
        now=clock(),
    )


async def test_a_welcome_email_is_queued_for_the_new_user() -> None:
    store, clock = Store(), Clock()
    event_id = new_id()
    await notifications.queue_welcome_email(
        emails=FakeEmails(store),
        event_id=event_id,
        user_id="u-ana",
        recipient="ana@example.com",
        full_name="Ana",
        now=clock(),
    )
    email = store.emails[event_id]
    assert (email.recipient, email.subject, email.status) == (
        "ana@example.com",
        "Welcome to tienda",
        EmailStatus.PENDING,
    )
    assert (email.user_id, email.order_id) == ("u-ana", "")
    assert "Hello Ana" in email.body


async def test_order_emails_go_to_the_snapshot_address_and_say_why() -> None:
    store, clock = Store(), Clock()
    ana = new_id()
    contacts = FakeContacts({ana: Contact("ana@example.com", "Ana", deleted=False)})
    event_id = await queue_order_email(
        store, contacts, ana, clock, event_type="order.cancelled", reason="payment declined"
    )
    email = store.emails[event_id]
    assert email.recipient == "ana@example.com"
    assert email.subject == "Your order 0190a0a0-0000-7000-8000-000000000001 was cancelled"
    assert "Reason: payment declined" in email.body and "Total: 29.99" in email.body
    assert (email.user_id, email.order_id) == (ana, "0190a0a0-0000-7000-8000-000000000001")


async def test_an_unknown_customer_makes_the_event_retry_and_a_deleted_one_gets_nothing() -> None:
    store, clock = Store(), Clock()
    gone = new_id()
    contacts = FakeContacts({gone: Contact("deleted@anonymised.invalid", "", deleted=True)})
    with pytest.raises(notifications.CustomerNotKnownYet):
        await queue_order_email(store, contacts, new_id(), clock)
    await queue_order_email(store, contacts, gone, clock)
    assert store.emails == {}


async def test_the_email_worker_sends_each_email_once_and_retries_failures() -> None:
    store, clock = Store(), Clock()
    await queue_welcome_email_e1(store, clock)
    mailer = FakeMailer(failures=1)
    worker = EmailWorker(
        uow_factory=lambda: FakeNotificationUnitOfWork(store),
        mailer=mailer,
        policy=policy(max_attempts=3),
        clock=clock,
    )
    assert await worker.send_due() == 1
    email = store.emails["e1"]
    assert (email.status, email.attempts, email.last_error) == (
        EmailStatus.PENDING,
        1,
        "OSError: connection refused",
    )
    assert email.next_attempt_time == clock() + timedelta(seconds=10)
    clock.advance(10)
    assert await worker.send_due() == 1
    assert store.emails["e1"].status == EmailStatus.SENT
    clock.advance(1000)
    assert await worker.send_due() == 0
    assert mailer.sent == [("a@x.io", "Welcome to tienda", store.emails["e1"].body)]


async def test_an_email_gives_up_after_its_attempts() -> None:
    store, clock = Store(), Clock()
    await queue_welcome_email_e1(store, clock)
    worker = EmailWorker(
        uow_factory=lambda: FakeNotificationUnitOfWork(store),
        mailer=FakeMailer(failures=10),
        policy=policy(max_attempts=2),
        clock=clock,
    )
    await worker.send_due()
    clock.advance(100)
    await worker.send_due()
    assert (store.emails["e1"].status, store.emails["e1"].attempts) == (EmailStatus.FAILED, 2)
