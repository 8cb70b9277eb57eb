"""order.v1.OrderService: each RPC turns its message into a command or query, hands it to the
service layer, and turns the resulting order into its message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from order.v1 import order_pb2, order_pb2_grpc
from tienda_platform.auth import current_principal

from order_service.domain.commands import CancelOrder, CreateOrder, RequestedItem
from order_service.domain.model import Order, OrderLine, OrderStatus, SagaMode
from order_service.domain.summary import OrderSummary
from order_service.entrypoints.webhook_rpcs import WebhookDependencies, WebhookRpcs
from order_service.service_layer import read_model, services
from order_service.service_layer.ports import ProductCatalog, SagaRunsHere
from order_service.service_layer.unit_of_work import AbstractUnitOfWork

SERVICE_NAME = "order.v1.OrderService"

_STATUS = {
    OrderStatus.PENDING: order_pb2.ORDER_STATUS_PENDING,
    OrderStatus.CONFIRMED: order_pb2.ORDER_STATUS_CONFIRMED,
    OrderStatus.REJECTED: order_pb2.ORDER_STATUS_REJECTED,
    OrderStatus.CANCELLED: order_pb2.ORDER_STATUS_CANCELLED,
}


@dataclass(frozen=True)
class OrderDependencies:
    """What the use cases need: a fresh unit of work per call, and the other systems."""

    uow_factory: Callable[[], AbstractUnitOfWork]
    catalog: ProductCatalog
    saga_mode: SagaMode
    # None without a database (a fake unit of work): the webhook RPCs then fail cleanly.
    webhooks: WebhookDependencies | None = None
    # For GetOrder and ListOrders: units of work that only read (on SQLite they do not take
    # the write lock, so reads never queue behind sagas). Without one, `uow_factory`.
    read_uow_factory: Callable[[], AbstractUnitOfWork] | None = None
    # The saga worker of this process (with a database): it runs placed orders' sagas at once.
    saga_runs_here: SagaRunsHere | None = None

    def reader(self) -> AbstractUnitOfWork:
        return (self.read_uow_factory or self.uow_factory)()


class OrderServicer(WebhookRpcs, order_pb2_grpc.OrderServiceServicer):
    def __init__(self, deps: OrderDependencies) -> None:
        self._deps = deps
        self._webhooks = deps.webhooks

    async def CreateOrder(
        self, request: order_pb2.CreateOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.Order:
        command = CreateOrder(
            items=tuple(
                RequestedItem(product_id=item.product_id, quantity=item.quantity)
                for item in request.items
            ),
            payment_token=request.payment_token,
            request_id=request.request_id,
        )
        order = await services.create_order(
            command=command,
            principal=current_principal(),
            uow=self._deps.uow_factory(),
            catalog=self._deps.catalog,
            saga_mode=self._deps.saga_mode,
            saga_runs_here=self._deps.saga_runs_here,
        )
        return order_to_proto(order)

    async def GetOrder(
        self, request: order_pb2.GetOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.Order:
        order = await services.get_order(
            order_id=request.id, principal=current_principal(), uow=self._deps.reader()
        )
        return order_to_proto(order)

    async def ListOrders(
        self, request: order_pb2.ListOrdersRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.ListOrdersResponse:
        page = await read_model.list_orders(
            page_size=request.page_size,
            page_token=request.page_token,
            principal=current_principal(),
            uow=self._deps.reader(),
        )
        return order_pb2.ListOrdersResponse(
            orders=[summary_to_proto(summary) for summary in page.orders],
            next_page_token=page.next_page_token,
        )

    async def CancelOrder(
        self, request: order_pb2.CancelOrderRequest, context: grpc.aio.ServicerContext
    ) -> order_pb2.Order:
        order = await services.cancel_order(
            command=CancelOrder(order_id=request.id),
            principal=current_principal(),
            uow=self._deps.uow_factory(),
        )
        return order_to_proto(order)


def order_to_proto(order: Order) -> order_pb2.Order:
    """The order's message; the payment token never leaves the service."""
    return _order_message(
        order_id=order.id,
        customer_id=order.customer_id,
        customer_name=order.customer_name,
        customer_email=order.customer_email,
        status=order.status,
        status_reason=order.status_reason,
        lines=order.lines,
        total_cents=order.total_cents,
        create_time=order.create_time,
        update_time=order.update_time,
    )


def summary_to_proto(summary: OrderSummary) -> order_pb2.Order:
    """A read-model summary as the same message GetOrder answers with."""
    return _order_message(
        order_id=summary.order_id,
        customer_id=summary.customer_id,
        customer_name=summary.customer_name,
        status=summary.status,
        status_reason=summary.status_reason,
        lines=summary.lines,
        total_cents=summary.total_cents,
        create_time=summary.create_time,
        update_time=summary.update_time,
    )


def _order_message(
    *,
    order_id: str,
    customer_id: str,
    customer_name: str,
    customer_email: str = "",
    status: OrderStatus,
    status_reason: str,
    lines: list[OrderLine],
    total_cents: int,
    create_time: datetime,
    update_time: datetime,
) -> order_pb2.Order:
    created, updated = Timestamp(), Timestamp()
    created.FromDatetime(create_time)
    updated.FromDatetime(update_time)
    return order_pb2.Order(
        id=order_id,
        customer_id=customer_id,
        customer_name=customer_name,
        customer_email=customer_email,
        status=_STATUS[status],
        status_reason=status_reason,
        items=[
            order_pb2.OrderItem(
                product_id=line.product_id,
                product_name=line.product_name,
                quantity=line.quantity,
                unit_price_cents=line.unit_price_cents,
            )
            for line in lines
        ],
        total_cents=total_cents,
        create_time=created,
        update_time=updated,
    )
