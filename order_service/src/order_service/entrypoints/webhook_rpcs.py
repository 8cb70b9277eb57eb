"""The webhook RPCs of order.v1.OrderService, as a mixin of OrderServicer: message in, service
layer call, message out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.empty_pb2 import Empty
from google.protobuf.timestamp_pb2 import Timestamp
from order.v1 import order_pb2
from tienda_platform.auth import current_principal
from tienda_platform.errors import FailedPrecondition

from order_service.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery
from order_service.service_layer import webhooks
from order_service.service_layer.notification_ports import AddressResolver
from order_service.service_layer.notification_unit_of_work import AbstractNotificationUnitOfWork

_DELIVERY_STATUS = {
    DeliveryStatus.PENDING: order_pb2.WEBHOOK_DELIVERY_STATUS_PENDING,
    DeliveryStatus.SUCCEEDED: order_pb2.WEBHOOK_DELIVERY_STATUS_SUCCEEDED,
    DeliveryStatus.FAILED: order_pb2.WEBHOOK_DELIVERY_STATUS_FAILED,
}


@dataclass(frozen=True)
class WebhookDependencies:
    """What the webhook RPCs need: a unit of work per call, DNS, and the address policy."""

    uow_factory: Callable[[], AbstractNotificationUnitOfWork]
    resolver: AddressResolver
    allow_private: bool


class WebhookRpcs:
    """CreateWebhook, ListWebhooks, DeleteWebhook and ListWebhookDeliveries."""

    # Set by the servicer; None without a database (a fake unit of work).
    _webhooks: WebhookDependencies | None = None

    def _webhook_deps(self) -> WebhookDependencies:
        if self._webhooks is None:
            raise FailedPrecondition("webhooks need the service's database")
        return self._webhooks

    async def CreateWebhook(
        self, request: order_pb2.CreateWebhookRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.Webhook:
        deps = self._webhook_deps()
        webhook = await webhooks.create_webhook(
            url=request.webhook.url,
            event_types=list(request.webhook.event_types),
            principal=current_principal(),
            uow=deps.uow_factory(),
            resolver=deps.resolver,
            allow_private=deps.allow_private,
        )
        return webhook_to_proto(webhook, with_secret=True)

    async def ListWebhooks(
        self, request: order_pb2.ListWebhooksRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListWebhooksResponse:
        page = await webhooks.list_webhooks(
            page_size=request.page_size,
            page_token=request.page_token,
            principal=current_principal(),
            uow=self._webhook_deps().uow_factory(),
        )
        return order_pb2.ListWebhooksResponse(
            webhooks=[webhook_to_proto(w, with_secret=False) for w in page.items],
            next_page_token=page.next_page_token,
        )

    async def DeleteWebhook(
        self, request: order_pb2.DeleteWebhookRequest, context: grpc.aio.ServicerContext
    ) -> Empty:
        await webhooks.delete_webhook(
            webhook_id=request.id,
            principal=current_principal(),
            uow=self._webhook_deps().uow_factory(),
        )
        return Empty()

    async def ListWebhookDeliveries(
        self, request: order_pb2.ListWebhookDeliveriesRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListWebhookDeliveriesResponse:
        page = await webhooks.list_deliveries(
            webhook_id=request.id,
            page_size=request.page_size,
            page_token=request.page_token,
            principal=current_principal(),
            uow=self._webhook_deps().uow_factory(),
        )
        return order_pb2.ListWebhookDeliveriesResponse(
            deliveries=[delivery_to_proto(d) for d in page.items],
            next_page_token=page.next_page_token,
        )


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def webhook_to_proto(webhook: Webhook, *, with_secret: bool) -> order_pb2.Webhook:
    """The webhook's message; the secret only when it was just created."""
    return order_pb2.Webhook(
        id=webhook.id,
        owner_id=webhook.owner_id,
        url=webhook.url,
        event_types=list(webhook.event_types),
        secret=webhook.secret if with_secret else "",
        create_time=_timestamp(webhook.create_time),
    )


def delivery_to_proto(delivery: WebhookDelivery) -> order_pb2.WebhookDelivery:
    message = order_pb2.WebhookDelivery(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        status=_DELIVERY_STATUS[delivery.status],
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        create_time=_timestamp(delivery.create_time),
        update_time=_timestamp(delivery.update_time),
    )
    if delivery.next_attempt_time is not None:
        message.next_attempt_time.CopyFrom(_timestamp(delivery.next_attempt_time))
    return message
