"""Webhook use cases over fakes: registration with the address check, who sees what, the
fan-out of an order event to deliveries, and the delivery worker's retries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from order_service.domain.webhooks import DeliveryStatus, WebhookNotFound
from order_service.service_layer import webhooks
from order_service.service_layer.notification_ports import Contact, HttpOutcome
from order_service.service_layer.webhook_worker import WebhookDeliveryWorker
from prometheus_client import REGISTRY
from standardwebhooks import Webhook as StandardWebhook
from tienda_platform.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from tienda_platform.ids import new_id

from .notification_fakes import (
    Clock,
    FakeNotificationUnitOfWork,
    FakeResolver,
    FakeSender,
    Store,
    person,
    policy,
)

pytestmark = pytest.mark.unit

PUBLIC = "https://hooks.example.com/tienda"
RESOLVER = FakeResolver(
    {
        "hooks.example.com": ["93.184.215.14"],
        "intranet.example.com": ["93.184.215.14", "10.1.2.3"],
        "localhost": ["127.0.0.1", "::1"],
    }
)


async def create(
    store: Store,
    owner: str,
    *,
    role: str = "customer",
    url: str = PUBLIC,
    types: tuple[str, ...] = ("order.created", "order.confirmed"),
    allow_private: bool = False,
) -> webhooks.Webhook:
    return await webhooks.create_webhook(
        url=url,
        event_types=list(types),
        principal=person(owner, role),
        uow=FakeNotificationUnitOfWork(store),
        resolver=RESOLVER,
        allow_private=allow_private,
    )


def delivered() -> dict[str, float]:
    """tienda_webhook_deliveries_total by result, so far in this process."""
    return {
        result: REGISTRY.get_sample_value("tienda_webhook_deliveries_total", {"result": result})
        or 0.0
        for result in ("succeeded", "failed_attempt", "gave_up")
    }


def counted_since(before: dict[str, float]) -> dict[str, float]:
    return {result: n - before[result] for result, n in delivered().items()}


def order_event(customer_id: str, event_type: str = "order.created") -> webhooks.OrderEvent:
    return webhooks.OrderEvent(
        event_id=new_id(),
        event_type=event_type,
        customer_id=customer_id,
        time=datetime(2026, 12, 1, 11, 59, 0, 123000, tzinfo=UTC),
        data={"order_id": "o-1", "customer_id": customer_id, "total_cents": "2999"},
    )


async def record(store: Store, event: webhooks.OrderEvent) -> int:
    uow = FakeNotificationUnitOfWork(store)
    return await webhooks.record_deliveries(
        event=event, webhooks=uow.webhooks, deliveries=uow.deliveries, now=event.time
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/h",
        "http://10.0.0.1/h",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/h",
        "http://localhost:8080/h",
        "https://intranet.example.com/h",  # one private address among public ones is enough
        "https://unknown.example.com/h",
    ],
)
async def test_urls_reaching_private_addresses_or_nowhere_are_refused(url: str) -> None:
    store = Store()
    with pytest.raises(InvalidArgument) as error:
        await create(store, new_id(), url=url)
    assert {v.field for v in error.value.violations} == {"webhook.url"}
    assert store.webhooks == {}


async def test_private_addresses_are_allowed_when_the_setting_says_so() -> None:
    hook = await create(Store(), new_id(), url="http://localhost:8080/h", allow_private=True)
    assert hook.url == "http://localhost:8080/h"


async def test_services_may_not_own_webhooks() -> None:
    with pytest.raises(PermissionDenied):
        await create(Store(), "service:product_service", role="service")


async def test_a_deleted_customer_whose_token_has_not_expired_registers_no_webhook() -> None:
    """As with orders: the account is gone (user.deleted reached the snapshot) though its
    access token still verifies."""
    store = Store()
    gone, known = new_id(), new_id()
    store.contacts[gone] = Contact(email="", full_name="Deleted customer", deleted=True)
    store.contacts[known] = Contact(email="k@x.io", full_name="Kim", deleted=False)
    with pytest.raises(FailedPrecondition, match="account was deleted"):
        await create(store, gone)
    assert store.webhooks == {}
    await create(store, known)  # a known customer, and one no event told of yet, may
    await create(store, new_id())
    assert len(store.webhooks) == 2


async def test_customers_see_and_delete_only_their_own_webhooks_admins_all() -> None:
    store = Store()
    alice, bob, admin = new_id(), new_id(), new_id()
    mine = await create(store, alice)
    theirs = await create(store, bob)
    page = await webhooks.list_webhooks(
        page_size=0, page_token="", principal=person(alice), uow=FakeNotificationUnitOfWork(store)
    )
    assert [w.id for w in page.items] == [mine.id]
    for attempt in (webhooks.delete_webhook, _list_deliveries):
        with pytest.raises(WebhookNotFound):
            await attempt(
                webhook_id=theirs.id, principal=person(alice), uow=FakeNotificationUnitOfWork(store)
            )
    everyone = await webhooks.list_webhooks(
        page_size=1,
        page_token="",
        principal=person(admin, "admin"),
        uow=FakeNotificationUnitOfWork(store),
    )
    assert [w.id for w in everyone.items] == [theirs.id] and everyone.next_page_token
    rest = await webhooks.list_webhooks(
        page_size=1,
        page_token=everyone.next_page_token,
        principal=person(admin, "admin"),
        uow=FakeNotificationUnitOfWork(store),
    )
    assert [w.id for w in rest.items] == [mine.id] and rest.next_page_token == ""
    await webhooks.delete_webhook(
        webhook_id=theirs.id,
        principal=person(admin, "admin"),
        uow=FakeNotificationUnitOfWork(store),
    )
    assert set(store.webhooks) == {mine.id}


async def _list_deliveries(**kwargs: object) -> object:
    return await webhooks.list_deliveries(page_size=0, page_token="", **kwargs)  # type: ignore[arg-type]


async def test_bad_ids_and_page_tokens_are_invalid_arguments() -> None:
    uow = FakeNotificationUnitOfWork(Store())
    with pytest.raises(InvalidArgument):
        await webhooks.delete_webhook(webhook_id="x" * 10**6, principal=person("a"), uow=uow)
    with pytest.raises(InvalidArgument):
        await webhooks.list_webhooks(
            page_size=0, page_token="not-a-token", principal=person("a"), uow=uow
        )
    with pytest.raises(InvalidArgument):
        await webhooks.list_webhooks(page_size=-1, page_token="", principal=person("a"), uow=uow)


async def test_an_order_event_reaches_its_customers_webhooks_and_admin_webhooks_only() -> None:
    store = Store()
    alice, bob = new_id(), new_id()
    alices = await create(store, alice)
    await create(store, bob)
    alices_confirmations = await create(store, alice, types=("order.confirmed",))
    admins = await create(store, new_id(), role="admin", types=("order.created",))
    event = order_event(alice)
    assert await record(store, event) == 2
    assert {d.webhook_id for d in store.deliveries.values()} == {alices.id, admins.id}
    assert await record(store, order_event(alice, "order.confirmed")) == 2
    targets = {d.webhook_id for d in store.deliveries.values() if d.event_type == "order.confirmed"}
    assert targets == {alices.id, alices_confirmations.id}
    delivery = next(d for d in store.deliveries.values() if d.event_id == event.event_id)
    assert json.loads(delivery.body) == {
        "type": "order.created",
        "timestamp": "2026-12-01T11:59:00.123000Z",
        "data": event.data,
    }
    assert (delivery.status, delivery.attempts, delivery.next_attempt_time) == (
        DeliveryStatus.PENDING,
        0,
        event.time,
    )
    assert delivery.order_id == "o-1"  # its attempts' spans carry it as order.id


def worker(
    store: Store, sender: FakeSender, clock: Clock, **options: object
) -> WebhookDeliveryWorker:
    return WebhookDeliveryWorker(
        uow_factory=lambda: FakeNotificationUnitOfWork(store),
        sender=sender,
        resolver=options.pop("resolver", RESOLVER),  # type: ignore[arg-type]
        allow_private=False,
        policy=options.pop("policy", policy(max_attempts=3)),  # type: ignore[arg-type]
        clock=clock,
    )


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers_2xx() -> None:
    store, clock = Store(), Clock()
    hook = await create(store, new_id())
    event = order_event(hook.owner_id)
    await record(store, event)
    sender = FakeSender(HttpOutcome(500, "HTTP 500"), HttpOutcome(0, "timed out"))
    deliveries = worker(store, sender, clock)
    clock.now = event.time
    before = delivered()
    assert await deliveries.deliver_due() == 1
    (delivery,) = store.deliveries.values()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.PENDING,
        1,
        500,
    )
    assert delivery.next_attempt_time == clock.now + timedelta(seconds=10)
    assert await deliveries.deliver_due() == 0  # not due yet
    clock.advance(10)
    assert await deliveries.deliver_due() == 1
    (delivery,) = store.deliveries.values()
    assert (delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        2,
        0,
        "timed out",
    )
    assert delivery.next_attempt_time == clock.now + timedelta(seconds=20)
    clock.advance(20)
    assert await deliveries.deliver_due() == 1
    (delivery,) = store.deliveries.values()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        3,
        200,
    )
    assert len(sender.posts) == 3
    assert counted_since(before) == {"succeeded": 1, "failed_attempt": 2, "gave_up": 0}
    assert {p.headers["webhook-id"] for p in sender.posts} == {event.event_id}
    last = sender.posts[-1]
    assert last.address == "93.184.215.14"
    # The signature is checked against the time of signing, which the fake clock set.
    stamp = datetime.fromtimestamp(int(last.headers["webhook-timestamp"]), UTC)
    assert stamp == clock.now.replace(microsecond=0)
    expected = StandardWebhook(hook.secret).sign(event.event_id, stamp, last.body)
    assert last.headers["webhook-signature"] == expected


async def test_a_delivery_gives_up_after_its_last_attempt() -> None:
    store, clock = Store(), Clock()
    hook = await create(store, new_id())
    await record(store, order_event(hook.owner_id))
    sender = FakeSender(*[HttpOutcome(503, "HTTP 503")] * 5)
    deliveries = worker(store, sender, clock, policy=policy(max_attempts=2))
    before = delivered()
    await deliveries.deliver_due()
    clock.advance(100)
    await deliveries.deliver_due()
    clock.advance(1000)
    assert await deliveries.deliver_due() == 0
    (delivery,) = store.deliveries.values()
    assert (delivery.status, delivery.attempts, delivery.next_attempt_time) == (
        DeliveryStatus.FAILED,
        2,
        None,
    )
    assert len(sender.posts) == 2
    assert counted_since(before) == {"succeeded": 0, "failed_attempt": 1, "gave_up": 1}


async def test_the_address_is_checked_again_at_delivery_time() -> None:
    store, clock = Store(), Clock()
    hook = await create(store, new_id())
    await record(store, order_event(hook.owner_id))
    rebound = FakeResolver({"hooks.example.com": ["127.0.0.1"]})
    sender = FakeSender()
    await worker(store, sender, clock, resolver=rebound).deliver_due()
    (delivery,) = store.deliveries.values()
    assert sender.posts == []
    assert delivery.status == DeliveryStatus.PENDING and "127.0.0.1" in delivery.last_error


async def test_an_attempt_interrupted_by_a_crash_is_retried_after_its_lease() -> None:
    store, clock = Store(), Clock()
    hook = await create(store, new_id())
    await record(store, order_event(hook.owner_id))
    crashed = worker(store, FakeSender(), clock)
    (claimed, _webhook) = (await crashed._claim_due())[0]  # claimed, then the process died
    assert claimed.attempts == 1
    sender = FakeSender()
    restarted = worker(store, sender, clock)
    assert await restarted.deliver_due() == 0  # still leased
    clock.advance(61)
    assert await restarted.deliver_due() == 1
    (delivery,) = store.deliveries.values()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.SUCCEEDED, 2)
    assert len(sender.posts) == 1
