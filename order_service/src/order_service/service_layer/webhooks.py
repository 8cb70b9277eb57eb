"""Webhook use cases: register, list and delete webhooks, read their delivery log, and turn an
order event into deliveries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from tienda_platform import pagination
from tienda_platform.auth import Principal
from tienda_platform.errors import FieldViolation, InvalidArgument, PermissionDenied
from tienda_platform.ids import is_valid_id, new_id

from order_service.adapters.webhook_repository import DeliveryRepository, WebhookRepository
from order_service.domain.errors import CustomerDeleted
from order_service.domain.webhooks import (
    Destination,
    Webhook,
    WebhookDelivery,
    WebhookNotFound,
    new_secret,
    refused_address,
    validate_webhook,
    validate_webhook_id,
)
from order_service.service_layer.notification_ports import AddressResolver
from order_service.service_layer.notification_unit_of_work import AbstractNotificationUnitOfWork


class DestinationRefused(InvalidArgument):
    """The URL's host does not resolve, or resolves to an address webhooks may not reach."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid webhook.url: {reason}", [FieldViolation("webhook.url", reason)])


T = TypeVar("T", Webhook, WebhookDelivery)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_page_token: str


@dataclass(frozen=True)
class OrderEvent:
    """An order event as webhooks see it: who it concerns, and its payload as JSON data."""

    event_id: str
    event_type: str
    customer_id: str
    time: datetime
    data: dict[str, Any]

    @property
    def order_id(self) -> str:
        return str(self.data.get("order_id", ""))


def utc_now() -> datetime:
    return datetime.now(UTC)


async def check_destination(*, url: str, resolver: AddressResolver, allow_private: bool) -> str:
    """The IP address to send to; DestinationRefused when the host does not resolve, or when
    any of its addresses is not public (unless allow_private)."""
    destination = Destination.parse(url)
    try:
        addresses = await resolver.resolve(destination.host, destination.port)
    except (OSError, UnicodeError):
        raise DestinationRefused(f"host {destination.host} does not resolve") from None
    if not addresses:
        raise DestinationRefused(f"host {destination.host} does not resolve")
    if not allow_private:
        for address in addresses:
            reason = refused_address(address)
            if reason is not None:
                raise DestinationRefused(
                    f"{destination.host} resolves to a refused address: {reason}"
                )
    return addresses[0]


async def create_webhook(
    *,
    url: str,
    event_types: Sequence[str],
    principal: Principal,
    uow: AbstractNotificationUnitOfWork,
    resolver: AddressResolver,
    allow_private: bool,
) -> Webhook:
    """Register a webhook for the caller; the returned webhook carries its secret."""
    _require_person(principal)
    types = validate_webhook(url=url, event_types=event_types)
    await check_destination(url=url, resolver=resolver, allow_private=allow_private)
    webhook = Webhook(
        id=new_id(),
        owner_id=principal.user_id,
        receives_all=principal.is_admin,
        url=url,
        event_types=types,
        secret=new_secret(),
        create_time=utc_now(),
    )
    async with uow:
        contact = await uow.contacts.contact_of(principal.user_id)
        if contact is not None and contact.deleted:
            raise CustomerDeleted()
        await uow.webhooks.add(webhook)
        await uow.commit()
    return webhook


async def list_webhooks(
    *, page_size: int, page_token: str, principal: Principal, uow: AbstractNotificationUnitOfWork
) -> Page[Webhook]:
    """The caller's webhooks (every webhook for admins), newest first."""
    _require_person(principal)
    limit, before = _page(page_size, page_token)
    async with uow:
        webhooks = await uow.webhooks.list_newest_first(
            owner_id=None if principal.is_admin else principal.user_id,
            before_id=before,
            limit=limit + 1,
        )
    return _paged(webhooks, limit)


async def delete_webhook(
    *, webhook_id: str, principal: Principal, uow: AbstractNotificationUnitOfWork
) -> None:
    """Stop deliveries to the caller's webhook (any webhook for admins) and drop its log."""
    _require_person(principal)
    validate_webhook_id(webhook_id)
    async with uow:
        await _visible(uow, webhook_id, principal)
        await uow.webhooks.delete(webhook_id)
        await uow.commit()


async def list_deliveries(
    *,
    webhook_id: str,
    page_size: int,
    page_token: str,
    principal: Principal,
    uow: AbstractNotificationUnitOfWork,
) -> Page[WebhookDelivery]:
    """The delivery log of one of the caller's webhooks, newest first."""
    _require_person(principal)
    validate_webhook_id(webhook_id)
    limit, before = _page(page_size, page_token)
    async with uow:
        await _visible(uow, webhook_id, principal)
        deliveries = await uow.deliveries.list_newest_first(
            webhook_id=webhook_id, before_id=before, limit=limit + 1
        )
    return _paged(deliveries, limit)


async def record_deliveries(
    *,
    event: OrderEvent,
    webhooks: WebhookRepository,
    deliveries: DeliveryRepository,
    now: datetime,
) -> int:
    """One delivery per webhook that wants this event, due now; returns how many."""
    body = json.dumps(
        {
            "type": event.event_type,
            "timestamp": event.time.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "data": event.data,
        },
        separators=(",", ":"),
        sort_keys=True,
    )
    created = 0
    for webhook in await webhooks.receiving(event.customer_id):
        if webhook.wants(event_type=event.event_type, customer_id=event.customer_id):
            await deliveries.add(
                WebhookDelivery.new(
                    delivery_id=new_id(),
                    webhook_id=webhook.id,
                    event_id=event.event_id,
                    event_type=event.event_type,
                    body=body,
                    now=now,
                    order_id=event.order_id,
                )
            )
            created += 1
    return created


def _require_person(principal: Principal) -> None:
    if principal.is_service:
        raise PermissionDenied("webhooks belong to customers and admins")


async def _visible(
    uow: AbstractNotificationUnitOfWork, webhook_id: str, principal: Principal
) -> Webhook:
    webhook = await uow.webhooks.get(webhook_id)
    if webhook is None or not webhook.is_visible_to(
        user_id=principal.user_id, is_admin=principal.is_admin
    ):
        raise WebhookNotFound(webhook_id)
    return webhook


def _page(page_size: int, page_token: str) -> tuple[int, str | None]:
    limit = pagination.page_size(page_size)
    cursor = pagination.decode_page_token(page_token, ("before",))
    before = cursor["before"] if cursor else None
    if before is not None and not is_valid_id(before):
        raise InvalidArgument.for_field("page_token", "not a page token from this API")
    return limit, before


def _paged(items: list[T], limit: int) -> Page[T]:
    page, more = items[:limit], len(items) > limit
    token = pagination.encode_page_token({"before": page[-1].id}) if more else ""
    return Page(items=page, next_page_token=token)
