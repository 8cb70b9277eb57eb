"""The product catalogue port over gRPC: a client of product.v1.ProductService.

BatchGetProducts forwards the caller's token; the stock RPCs are internal to the services and
carry order_service's own service token.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from loguru import logger
from product.v1 import product_pb2, product_pb2_grpc
from tienda_platform import grpc_client
from tienda_platform.auth import Principal
from tienda_platform.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
)

from order_service.service_layer.ports import (
    ProductCatalog,
    ProductSnapshot,
    Reservation,
    StockLine,
)

_HELD = (
    product_pb2.RESERVATION_STATUS_RESERVED,
    product_pb2.RESERVATION_STATUS_COMMITTED,
)


ServiceToken = Callable[[], Awaitable[str]]


class GrpcProductCatalog(ProductCatalog):
    """Calls product_service with a bearer token and a deadline per call."""

    def __init__(
        self, channel: grpc.aio.Channel, *, timeout: float, service_token: ServiceToken
    ) -> None:
        self._channel = channel
        self._stub = product_pb2_grpc.ProductServiceStub(channel)
        self._timeout = timeout
        self._service_token = service_token

    @classmethod
    def connect(
        cls, target: str, *, timeout: float, service_token: ServiceToken
    ) -> GrpcProductCatalog:
        """A catalogue on a new channel to target (host:port)."""
        return cls(grpc_client.create_channel(target), timeout=timeout, service_token=service_token)

    async def close(self) -> None:
        await self._channel.close()

    async def batch_get_products(
        self, *, ids: Sequence[str], principal: Principal
    ) -> list[ProductSnapshot]:
        response = await self._call(
            self._stub.BatchGetProducts,
            product_pb2.BatchGetProductsRequest(ids=list(ids)),
            principal.token,
        )
        return [
            ProductSnapshot(id=p.id, name=p.name, price_cents=p.price_cents)
            for p in response.products
        ]

    async def reserve_stock(self, *, order_id: str, lines: Sequence[StockLine]) -> Reservation:
        response = await self._call(
            self._stub.ReserveStock,
            product_pb2.ReserveStockRequest(
                order_id=order_id,
                items=[
                    product_pb2.StockItem(product_id=line.product_id, quantity=line.quantity)
                    for line in lines
                ],
            ),
            await self._service_token(),
        )
        if response.status in _HELD:
            return Reservation(reserved=True)
        status = product_pb2.ReservationStatus.Name(response.status)
        return Reservation(reserved=False, reason=response.reason or f"reservation {status}")

    async def release_stock(self, *, order_id: str) -> None:
        try:
            await self._call(
                self._stub.ReleaseStock,
                product_pb2.ReleaseStockRequest(order_id=order_id),
                await self._service_token(),
            )
        except NotFound:
            return  # no reservation was ever made for this order: nothing to give back

    async def commit_reservation(self, *, order_id: str) -> None:
        await self._call(
            self._stub.CommitReservation,
            product_pb2.CommitReservationRequest(order_id=order_id),
            await self._service_token(),
        )

    async def _call(self, method: Callable[..., Awaitable[Any]], request: Any, token: str) -> Any:
        try:
            return await method(request, timeout=self._timeout, metadata=grpc_client.bearer(token))
        except grpc.aio.AioRpcError as error:
            raise _service_error(error) from error


def _service_error(error: grpc.aio.AioRpcError) -> Exception:
    """product_service's status as this service's error for the same situation."""
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return Unavailable("product service unavailable")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("product service did not answer in time")
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFound(error.details() or "not found")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(error.details() or "invalid argument")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(error.details() or "failed precondition")
    # Anything else is product_service failing, not the caller's mistake: the order cannot
    # proceed now, which is what UNAVAILABLE tells a client.
    logger.warning(
        "product service answered {code}: {details}", code=code.name, details=error.details()
    )
    return Unavailable("product service unavailable")
