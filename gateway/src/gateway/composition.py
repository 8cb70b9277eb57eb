"""GET /v1/orders/{id}/details: one order with its products and customer, from three services.

The order comes first (its errors are the answer's errors); products and customer are then
fetched together. When product_service or auth_service cannot answer, the order still comes
back, 200, with its own snapshots (item names and prices, the customer's name and email) and
`"degraded": true`.
"""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
from auth.v1 import auth_pb2
from google.protobuf.message import Message
from loguru import logger
from order.v1 import order_pb2
from product.v1 import product_pb2
from starlette.requests import Request
from starlette.responses import Response
from tienda_platform.proto_schemas import SchemaRegistry

from gateway.endpoints import forwarded_metadata, json_response
from gateway.errors import from_rpc_error
from gateway.openapi import BEARER, ERROR_RESPONSE, json_content
from gateway.transcoding import response_json
from gateway.upstreams import Metadata, UnaryCall, Upstreams

PATH = "/v1/orders/{id}/details"
CUSTOMER_FIELDS = ("id", "email", "full_name")


class OrderDetails:
    """The composed order view."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.get_order = upstreams.unary(
            order_pb2.DESCRIPTOR.services_by_name["OrderService"], "GetOrder"
        )
        self.batch_get_products = upstreams.unary(
            product_pb2.DESCRIPTOR.services_by_name["ProductService"], "BatchGetProducts"
        )
        self.get_user = upstreams.unary(
            auth_pb2.DESCRIPTOR.services_by_name["AuthService"], "GetUser"
        )

    async def __call__(self, request: Request, params: dict[str, str]) -> Response:
        metadata = forwarded_metadata(request)
        try:
            order = await self.get_order(
                order_pb2.GetOrderRequest(id=params["id"]), metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, rpc=self.get_order.full_name) from None
        product_ids = list(dict.fromkeys(item.product_id for item in order.items))
        (products, products_missing), (user, user_missing) = await asyncio.gather(
            self._products(product_ids, metadata, order_id=order.id),
            _optional(
                self.get_user,
                auth_pb2.GetUserRequest(id=order.customer_id),
                metadata,
                order_id=order.id,
            ),
        )
        customer = None
        if user is not None:
            customer = {name: getattr(user, name) for name in CUSTOMER_FIELDS}
        elif user_missing:
            customer = _customer_snapshot(order)
        return json_response(
            {
                "order": response_json(order),
                "products": products,
                "customer": customer,
                "degraded": products_missing or user_missing,
            }
        )

    async def _products(
        self, product_ids: list[str], metadata: Metadata, *, order_id: str
    ) -> tuple[list[dict[str, Any]] | None, bool]:
        if not product_ids:
            return [], False
        reply, degraded = await _optional(
            self.batch_get_products,
            product_pb2.BatchGetProductsRequest(ids=product_ids),
            metadata,
            order_id=order_id,
        )
        if reply is None:
            return None, degraded
        return [response_json(product) for product in reply.products], False


def _customer_snapshot(order: order_pb2.Order) -> dict[str, str]:
    """The customer as order_service's snapshot knows them (name and email)."""
    return {
        "id": order.customer_id,
        "email": order.customer_email,
        "full_name": order.customer_name,
    }


async def _optional(
    call: UnaryCall, request: Message, metadata: Metadata, *, order_id: str
) -> tuple[Any, bool]:
    """The reply, or None and whether its absence degrades the answer (NOT_FOUND does not)."""
    try:
        return await call(request, metadata=metadata), False
    except grpc.aio.AioRpcError as error:
        if error.code() is grpc.StatusCode.NOT_FOUND:
            return None, False
        logger.warning(
            "order details without {rpc}: {grpc_code}",
            rpc=call.full_name,
            grpc_code=error.code().name,
            order_id=order_id,
        )
        return None, True


def describe(schemas: SchemaRegistry) -> dict[str, Any]:
    """The OpenAPI operation of this route, written by hand: it is not an RPC."""
    order = schemas.message_ref(order_pb2.Order.DESCRIPTOR)
    product = schemas.message_ref(product_pb2.Product.DESCRIPTOR)
    user = auth_pb2.User.DESCRIPTOR.fields_by_name
    customer = {
        "type": "object",
        "properties": {name: schemas.field_schema(user[name]) for name in CUSTOMER_FIELDS},
    }
    details = {
        "type": "object",
        "required": ["order", "products", "customer", "degraded"],
        "properties": {
            "order": order,
            "products": {
                "anyOf": [{"type": "array", "items": product}, {"type": "null"}],
                "description": "The ordered products now; null when degraded.",
            },
            "customer": {
                "anyOf": [customer, {"type": "null"}],
                "description": "The customer; null when deleted. When auth_service cannot "
                "answer (degraded), the order's snapshot: its customer_id and customer_name, "
                "and an empty email.",
            },
            "degraded": {
                "type": "boolean",
                "description": "True when products or customer could not be fetched; the "
                "order's own snapshots (item names and prices, the customer's name) are still "
                "there.",
            },
        },
    }
    return {
        "operationId": "GetOrderDetails",
        "summary": "One order with its products and its customer",
        "description": "Composed by the gateway from OrderService.GetOrder, "
        "ProductService.BatchGetProducts and AuthService.GetUser; owners and admins.",
        "tags": ["OrderService"],
        "parameters": [
            {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {"200": json_content(details), "default": ERROR_RESPONSE},
        "security": [{BEARER: []}],
    }
