"""Webhook rules: URL and event type validation, the address policy, secrets, Standard Webhooks
signatures, and the backoff of retries."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from order_service.domain.retry import RetryPolicy
from order_service.domain.webhooks import (
    EVENT_TYPES,
    DeliveryStatus,
    WebhookDelivery,
    new_secret,
    refused_address,
    signature,
    validate_webhook,
)
from standardwebhooks import Webhook as StandardWebhook
from tienda_contracts.topology import subscriptions_of
from tienda_platform.errors import InvalidArgument

from .notification_fakes import policy

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def fields_of(error: pytest.ExceptionInfo[InvalidArgument]) -> set[str]:
    return {v.field for v in error.value.violations}


def test_the_event_types_are_those_the_webhooks_group_reads() -> None:
    (subscription,) = subscriptions_of("webhooks")
    assert set(EVENT_TYPES) == set(subscription.event_types)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "https://",
        "https://user:pw@example.com/",
        "https://example.com:99999/",
        "https://exa mple.com/",
        "https://example.com/\nx",
        "https://example.com/" + "a" * 2048,
        "https://example.com/" + "a" * 1_000_000,
    ],
)
def test_urls_that_are_not_plain_http_or_https_are_invalid(url: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_webhook(url=url, event_types=["order.created"])
    assert fields_of(error) == {"webhook.url"}


def test_event_types_must_be_known_and_present() -> None:
    with pytest.raises(InvalidArgument) as error:
        validate_webhook(url="https://example.com/h", event_types=[])
    assert fields_of(error) == {"webhook.event_types"}
    with pytest.raises(InvalidArgument) as error:
        validate_webhook(url="https://example.com/h", event_types=["order.created", "x" * 10**6])
    assert fields_of(error) == {"webhook.event_types[1]"}
    with pytest.raises(InvalidArgument):
        validate_webhook(url="https://example.com/h", event_types=["order.created"] * 1000)


def test_a_valid_webhook_keeps_its_event_types_once_each_in_order() -> None:
    assert validate_webhook(
        url="http://example.com:8080/hooks?x=1",
        event_types=["order.confirmed", "order.created", "order.confirmed"],
    ) == ("order.confirmed", "order.created")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud instance metadata
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fe80::1%eth0", "link-local"),
        ("fc00::1", "private"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
    ],
)
def test_non_public_addresses_are_refused_saying_what_they_are(address: str, kind: str) -> None:
    shown = address.split("%", 1)[0].removeprefix("::ffff:")
    assert refused_address(address) == f"{shown} is a {kind} address"


def test_what_is_not_an_ip_address_is_refused() -> None:
    assert refused_address("not-an-ip") == "not-an-ip is not an IP address"


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refused_address(address) is None


def test_secrets_are_whsec_and_24_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first.removeprefix("whsec_"))) == 24


def test_signatures_verify_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    body = '{"data":{"order_id":"o1"},"timestamp":"2026-12-01T12:00:00Z","type":"order.created"}'
    timestamp = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(
            secret=secret, message_id="msg_1", timestamp=timestamp, body=body
        ),
    }
    assert StandardWebhook(secret).verify(body, headers)["data"] == {"order_id": "o1"}
    tampered = {**headers, "webhook-id": "msg_2"}
    with pytest.raises(Exception, match="signature"):
        StandardWebhook(secret).verify(body, tampered)


def test_backoff_is_exponential_capped_and_fully_jittered() -> None:
    drawn: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        drawn.append((low, high))
        return high / 2

    retry = RetryPolicy(
        max_attempts=10,
        base_delay=timedelta(seconds=2),
        max_delay=timedelta(seconds=20),
        lease=timedelta(seconds=30),
        uniform=uniform,
    )
    delays = [retry.delay_after(n).total_seconds() for n in range(1, 7)]
    assert drawn == [(0.0, 2.0), (0.0, 4.0), (0.0, 8.0), (0.0, 16.0), (0.0, 20.0), (0.0, 20.0)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry.delay_after(10_000) == timedelta(seconds=10)


def test_a_delivery_retries_until_its_attempts_are_used_up() -> None:
    retry = policy(max_attempts=2)
    delivery = WebhookDelivery.new(
        delivery_id="d",
        webhook_id="w",
        event_id="e",
        event_type="order.created",
        body="{}",
        now=NOW,
    )
    first = delivery.claimed(now=NOW, policy=retry)
    assert first.attempts == 1 and first.next_attempt_time == NOW + timedelta(seconds=60)
    failed = first.failed(status_code=500, error="HTTP 500", now=NOW, policy=retry)
    assert failed.status == DeliveryStatus.PENDING
    assert failed.next_attempt_time == NOW + timedelta(seconds=10)
    second = failed.claimed(now=NOW, policy=retry)
    gave_up = second.failed(status_code=0, error="timed out", now=NOW, policy=retry)
    assert gave_up.status == DeliveryStatus.FAILED and gave_up.next_attempt_time is None
    assert (gave_up.attempts, gave_up.last_status_code, gave_up.last_error) == (2, 0, "timed out")
    done = second.succeeded(status_code=204, now=NOW)
    assert (done.status, done.last_status_code, done.next_attempt_time) == (
        DeliveryStatus.SUCCEEDED,
        204,
        None,
    )
