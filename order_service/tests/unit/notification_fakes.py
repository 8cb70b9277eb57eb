"""In-memory stand-ins for the webhook and email repositories, DNS, receivers and mail servers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from order_service.adapters.notification_repository import EmailRepository
from order_service.adapters.webhook_repository import DeliveryRepository, WebhookRepository
from order_service.domain.notifications import Email, EmailStatus
from order_service.domain.retry import RetryPolicy
from order_service.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery
from order_service.service_layer.notification_ports import (
    AddressResolver,
    Contact,
    CustomerContacts,
    HttpOutcome,
    Mailer,
    WebhookSender,
)
from order_service.service_layer.notification_unit_of_work import AbstractNotificationUnitOfWork
from tienda_platform.auth import Principal


def person(user_id: str, role: str = "customer") -> Principal:
    return Principal(user_id=user_id, role=role, token="t")


def policy(max_attempts: int = 3, *, lease: float = 60.0) -> RetryPolicy:
    """Delays of exactly the cap (no randomness), so tests can predict them."""
    return RetryPolicy(
        max_attempts=max_attempts,
        base_delay=timedelta(seconds=10),
        max_delay=timedelta(seconds=100),
        lease=timedelta(seconds=lease),
        uniform=lambda low, high: high,
    )


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Store:
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    deliveries: dict[str, WebhookDelivery] = field(default_factory=dict)
    emails: dict[str, Email] = field(default_factory=dict)
    contacts: dict[str, Contact] = field(default_factory=dict)


class FakeWebhooks(WebhookRepository):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, webhook: Webhook) -> None:
        self._store.webhooks[webhook.id] = webhook

    async def get(self, webhook_id: str) -> Webhook | None:
        return self._store.webhooks.get(webhook_id)

    async def delete(self, webhook_id: str) -> None:
        self._store.webhooks.pop(webhook_id, None)
        for delivery in list(self._store.deliveries.values()):
            if delivery.webhook_id == webhook_id:
                del self._store.deliveries[delivery.id]

    async def list_newest_first(
        self, *, owner_id: str | None, before_id: str | None, limit: int
    ) -> list[Webhook]:
        found = sorted(
            (
                w
                for w in self._store.webhooks.values()
                if (owner_id is None or w.owner_id == owner_id)
                and (before_id is None or w.id < before_id)
            ),
            key=lambda w: w.id,
            reverse=True,
        )
        return found[:limit]

    async def receiving(self, customer_id: str) -> list[Webhook]:
        return [
            w for w in self._store.webhooks.values() if w.receives_all or w.owner_id == customer_id
        ]


class FakeDeliveries(DeliveryRepository):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, delivery: WebhookDelivery) -> None:
        self._store.deliveries[delivery.id] = delivery

    async def get(self, delivery_id: str, *, for_update: bool = False) -> WebhookDelivery | None:
        return self._store.deliveries.get(delivery_id)

    async def save(self, delivery: WebhookDelivery) -> None:
        self._store.deliveries[delivery.id] = delivery

    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        due = [
            d
            for d in self._store.deliveries.values()
            if d.status == DeliveryStatus.PENDING
            and d.next_attempt_time is not None
            and d.next_attempt_time <= now
        ]
        return sorted(due, key=lambda d: (d.next_attempt_time, d.id))[:limit]

    async def list_newest_first(
        self, *, webhook_id: str, before_id: str | None, limit: int
    ) -> list[WebhookDelivery]:
        found = sorted(
            (
                d
                for d in self._store.deliveries.values()
                if d.webhook_id == webhook_id and (before_id is None or d.id < before_id)
            ),
            key=lambda d: d.id,
            reverse=True,
        )
        return found[:limit]


class FakeEmails(EmailRepository):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def add(self, email: Email) -> None:
        assert email.event_id not in self._store.emails, "one email per event"
        self._store.emails[email.event_id] = email

    async def get(self, event_id: str, *, for_update: bool = False) -> Email | None:
        return self._store.emails.get(event_id)

    async def save(self, email: Email) -> None:
        self._store.emails[email.event_id] = email

    async def due(self, *, now: datetime, limit: int) -> list[Email]:
        due = [
            e
            for e in self._store.emails.values()
            if e.status == EmailStatus.PENDING
            and e.next_attempt_time is not None
            and e.next_attempt_time <= now
        ]
        return sorted(due, key=lambda e: (e.next_attempt_time, e.event_id))[:limit]


class FakeNotificationUnitOfWork(AbstractNotificationUnitOfWork):
    """Changes apply at once (no isolation), which the use cases under test do not rely on."""

    def __init__(self, store: Store) -> None:
        self.webhooks = FakeWebhooks(store)
        self.deliveries = FakeDeliveries(store)
        self.emails = FakeEmails(store)
        self.contacts = FakeContacts(store.contacts)
        self.commits = 0

    async def commit(self) -> None:
        self.commits += 1

    async def rollback(self) -> None:
        pass


class FakeResolver(AddressResolver):
    def __init__(self, hosts: dict[str, list[str]] | None = None) -> None:
        self.hosts = hosts or {}

    async def resolve(self, host: str, port: int) -> list[str]:
        if host.replace(".", "").isdigit() or ":" in host:
            return [host]
        if host not in self.hosts:
            raise OSError(f"unknown host {host}")
        return self.hosts[host]


@dataclass
class Post:
    url: str
    address: str
    headers: dict[str, str]
    body: str


class FakeSender(WebhookSender):
    """Answers with the scripted outcomes in turn, then 200."""

    def __init__(self, *outcomes: HttpOutcome) -> None:
        self.outcomes = list(outcomes)
        self.posts: list[Post] = []

    async def post(
        self, *, url: str, address: str, headers: dict[str, str], body: str
    ) -> HttpOutcome:
        self.posts.append(Post(url, address, headers, body))
        return self.outcomes.pop(0) if self.outcomes else HttpOutcome(200)


class FakeMailer(Mailer):
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[tuple[str, str, str]] = []

    async def send(self, *, recipient: str, subject: str, body: str) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("connection refused")
        self.sent.append((recipient, subject, body))


class FakeContacts(CustomerContacts):
    def __init__(self, contacts: dict[str, Contact] | None = None) -> None:
        self.contacts = contacts or {}

    async def contact_of(self, customer_id: str) -> Contact | None:
        return self.contacts.get(customer_id)
