"""The webhook RPCs on a real grpc.aio server and database: secrets, ownership, validation and
the refusal of private destinations (SSRF) when WEBHOOK_ALLOW_PRIVATE is false."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from order.v1 import order_pb2
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint

from .running_notifications import RunningService, notification_settings, run_service

pytestmark = pytest.mark.integration

# A public address written as an IP: registering it needs no DNS and no network.
PUBLIC_URL = "https://93.184.215.14/hooks/tienda"


@pytest.fixture
async def service(
    database_url: str, redis_url: str, token_mint: TokenMint
) -> AsyncIterator[RunningService]:
    settings = notification_settings(
        database_url=database_url, redis_url=redis_url, webhook_allow_private=False
    )
    async with run_service(settings, mint=token_mint) as running:
        yield running


def violations(error: grpc.aio.AioRpcError) -> set[str]:
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return {v.field for v in bad_request.field_violations}


async def test_the_secret_is_shown_once_and_customers_see_only_their_webhooks(
    service: RunningService,
) -> None:
    alice, bob, admin = new_id(), new_id(), new_id()
    created = await service.create_webhook(alice, PUBLIC_URL, "order.created", "order.confirmed")
    assert created.secret.startswith("whsec_") and created.owner_id == alice
    assert list(created.event_types) == ["order.created", "order.confirmed"]
    theirs = await service.create_webhook(bob, PUBLIC_URL, "order.rejected")

    listed = await service.stub.ListWebhooks(
        order_pb2.ListWebhooksRequest(), metadata=service.auth(alice)
    )
    assert [w.id for w in listed.webhooks] == [created.id]
    assert listed.webhooks[0].secret == "" and listed.webhooks[0].url == PUBLIC_URL

    for call, request in (
        (service.stub.DeleteWebhook, order_pb2.DeleteWebhookRequest(id=theirs.id)),
        (
            service.stub.ListWebhookDeliveries,
            order_pb2.ListWebhookDeliveriesRequest(id=theirs.id),
        ),
        (service.stub.DeleteWebhook, order_pb2.DeleteWebhookRequest(id=new_id())),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request, metadata=service.auth(alice))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND

    everyone = await service.stub.ListWebhooks(
        order_pb2.ListWebhooksRequest(), metadata=service.auth(admin, "admin")
    )
    assert {w.id for w in everyone.webhooks} == {created.id, theirs.id}
    await service.stub.DeleteWebhook(
        order_pb2.DeleteWebhookRequest(id=theirs.id), metadata=service.auth(admin, "admin")
    )
    await service.stub.DeleteWebhook(
        order_pb2.DeleteWebhookRequest(id=created.id), metadata=service.auth(alice)
    )
    left = await service.stub.ListWebhooks(
        order_pb2.ListWebhooksRequest(), metadata=service.auth(admin, "admin")
    )
    assert list(left.webhooks) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/hook",
        "http://localhost:8080/hook",
        "http://0.0.0.0/hook",
    ],
)
async def test_private_loopback_and_link_local_destinations_are_refused(
    service: RunningService, url: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.create_webhook(new_id(), url, "order.created")
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violations(error.value) == {"webhook.url"}


@pytest.mark.parametrize(
    ("url", "event_types", "field"),
    [
        ("ftp://93.184.215.14/x", ["order.created"], "webhook.url"),
        ("https://93.184.215.14/" + "x" * 1_000_000, ["order.created"], "webhook.url"),
        (PUBLIC_URL, [], "webhook.event_types"),
        (PUBLIC_URL, ["order.shipped"], "webhook.event_types[0]"),
        (PUBLIC_URL, ["x" * 1_000_000], "webhook.event_types[0]"),
    ],
)
async def test_bad_webhooks_are_invalid_arguments(
    service: RunningService, url: str, event_types: list[str], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.create_webhook(new_id(), url, *event_types)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in violations(error.value)


async def test_bad_ids_are_invalid_arguments(service: RunningService) -> None:
    for request in (
        order_pb2.DeleteWebhookRequest(id="x" * 1_000_000),
        order_pb2.DeleteWebhookRequest(id=""),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await service.stub.DeleteWebhook(request, metadata=service.auth(new_id()))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.stub.ListWebhookDeliveries(
            order_pb2.ListWebhookDeliveriesRequest(id=new_id(), page_token="garbage"),
            metadata=service.auth(new_id()),
        )
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_webhooks_need_a_caller(service: RunningService) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await service.stub.ListWebhooks(order_pb2.ListWebhooksRequest())
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
