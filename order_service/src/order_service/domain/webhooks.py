"""Webhooks: subscriptions of URLs to order events, and their deliveries (Standard Webhooks)."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from urllib.parse import SplitResult, urlsplit

from tienda_platform.errors import InvalidArgument, NotFound, Validator
from tienda_platform.ids import is_valid_id

from order_service.domain.retry import RetryPolicy

EVENT_TYPES = ("order.created", "order.confirmed", "order.cancelled", "order.rejected")
MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 24


class WebhookNotFound(NotFound):
    """No such webhook, or one the caller may not see: both read the same."""

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"webhook {webhook_id} not found")


class DeliveryStatus(enum.StrEnum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


@dataclass(frozen=True)
class Destination:
    """Where a webhook URL points: its host and port, as used to resolve and connect."""

    url: str
    scheme: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> Destination:
        """The destination of a URL that passed validate_webhook_url."""
        parts = urlsplit(url)
        assert parts.hostname is not None
        default_port = 443 if parts.scheme == "https" else 80
        return cls(
            url=url, scheme=parts.scheme, host=parts.hostname, port=parts.port or default_port
        )


@dataclass(frozen=True)
class Webhook:
    """A URL subscribed to some order events. An admin's webhook hears every order; a
    customer's only their own."""

    id: str
    owner_id: str
    receives_all: bool
    url: str
    event_types: tuple[str, ...]
    secret: str
    create_time: datetime

    def wants(self, *, event_type: str, customer_id: str) -> bool:
        """Whether an event of this type about this customer's order goes to this webhook."""
        return event_type in self.event_types and (
            self.receives_all or customer_id == self.owner_id
        )

    def is_visible_to(self, *, user_id: str, is_admin: bool) -> bool:
        return is_admin or self.owner_id == user_id


@dataclass(frozen=True)
class WebhookDelivery:
    """One event on its way to one webhook, with the outcome of its attempts so far."""

    id: str
    webhook_id: str
    event_id: str
    event_type: str
    body: str
    status: DeliveryStatus
    attempts: int
    last_status_code: int
    last_error: str
    next_attempt_time: datetime | None
    create_time: datetime
    update_time: datetime
    # the order the event is about: its attempts' spans carry it as order.id
    order_id: str = ""
    # W3C traceparent of the span that created it ("" untraced): its work joins that trace.
    trace_parent: str = ""

    @classmethod
    def new(
        cls,
        *,
        delivery_id: str,
        webhook_id: str,
        event_id: str,
        event_type: str,
        body: str,
        now: datetime,
        order_id: str = "",
    ) -> WebhookDelivery:
        """A delivery due at once."""
        return cls(
            id=delivery_id,
            webhook_id=webhook_id,
            event_id=event_id,
            event_type=event_type,
            body=body,
            order_id=order_id,
            status=DeliveryStatus.PENDING,
            attempts=0,
            last_status_code=0,
            last_error="",
            next_attempt_time=now,
            create_time=now,
            update_time=now,
        )

    def claimed(self, *, now: datetime, policy: RetryPolicy) -> WebhookDelivery:
        """Counted as an attempt and hidden from other workers until the lease runs out."""
        return replace(
            self, attempts=self.attempts + 1, next_attempt_time=now + policy.lease, update_time=now
        )

    def interrupted(self, *, now: datetime) -> WebhookDelivery:
        """Its last allowed attempt was claimed but never reported (the worker died)."""
        return replace(
            self,
            status=DeliveryStatus.FAILED,
            last_error=self.last_error or "the last attempt was interrupted",
            next_attempt_time=None,
            update_time=now,
        )

    def succeeded(self, *, status_code: int, now: datetime) -> WebhookDelivery:
        return replace(
            self,
            status=DeliveryStatus.SUCCEEDED,
            last_status_code=status_code,
            last_error="",
            next_attempt_time=None,
            update_time=now,
        )

    def failed(
        self, *, status_code: int, error: str, now: datetime, policy: RetryPolicy
    ) -> WebhookDelivery:
        """Retry later, or give up once the attempts are used up."""
        done = policy.exhausted(self.attempts)
        return replace(
            self,
            status=DeliveryStatus.FAILED if done else DeliveryStatus.PENDING,
            last_status_code=status_code,
            last_error=error[:1000],
            next_attempt_time=None if done else now + policy.delay_after(self.attempts),
            update_time=now,
        )


def new_secret() -> str:
    """A signing secret: "whsec_" and 24 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()


def signature(*, secret: str, message_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks `webhook-signature` header: "v1," + base64 HMAC-SHA256."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def validate_webhook(*, url: str, event_types: Sequence[str]) -> tuple[str, ...]:
    """Check a new webhook's URL and event types; returns the event types without repeats."""
    check = Validator()
    _check_url(check, url)
    check.check(len(event_types) > 0, "webhook.event_types", "name at least one event type")
    check.check(len(event_types) <= 2 * len(EVENT_TYPES), "webhook.event_types", "too many entries")
    for index, event_type in enumerate(event_types[: 2 * len(EVENT_TYPES)]):
        check.check(
            event_type in EVENT_TYPES,
            f"webhook.event_types[{index}]",
            f"must be one of {', '.join(EVENT_TYPES)}",
        )
    check.raise_if_invalid()
    return tuple(dict.fromkeys(event_types))


def _check_url(check: Validator, url: str) -> None:
    field = "webhook.url"
    if not url:
        check.check(False, field, "is required")
        return
    if len(url) > MAX_URL_LENGTH:
        check.check(False, field, f"must be at most {MAX_URL_LENGTH} characters")
        return
    try:
        parts: SplitResult | None = urlsplit(url)
        assert parts is not None
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        parts = None
    if parts is None:
        check.check(False, field, "is not a URL")
        return
    check.check(parts.scheme in ("http", "https"), field, "must be an http or https URL")
    check.check(bool(parts.hostname), field, "must name a host")
    check.check(not parts.username and not parts.password, field, "must not carry credentials")
    check.check(url.isprintable() and " " not in url, field, "must not contain spaces or controls")


def refused_address(address: str) -> str | None:
    """Why webhooks may not be sent to this IP address, or None when it is a public one."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    # the most specific kind first: Python counts loopback, link-local, unspecified and
    # reserved addresses as private too
    for flag, kind in (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (not ip.is_global, "non-public"),
    ):
        if flag:
            return f"{ip} is a {kind} address"
    return None


def validate_webhook_id(webhook_id: str) -> None:
    if not is_valid_id(webhook_id):
        raise InvalidArgument.for_field("id", "must be a UUID")
