"""product.v1.ProductService: each RPC turns its message into a use-case call and back."""

from __future__ import annotations

from grpc import aio
from product.v1 import product_pb2, product_pb2_grpc
from tienda_platform.auth import current_principal, require_service
from tienda_platform.telemetry import set_span_attributes

from product_service.domain.model import (
    ID_MAX_LENGTH,
    Product,
    Reservation,
    ReservationStatus,
    StockItem,
)
from product_service.service_layer import reservations, services
from product_service.service_layer.services import Dependencies

SERVICE_NAME = product_pb2.DESCRIPTOR.services_by_name["ProductService"].full_name
# Reading the catalogue needs no token. Every other method needs one: the admin-only ones
# check the role, and the internal reservation methods accept only other tienda services.
PUBLIC_METHODS = frozenset(
    f"/{SERVICE_NAME}/{name}" for name in ("GetProduct", "ListProducts", "BatchGetProducts")
)

_STATUS = {
    ReservationStatus.RESERVED: product_pb2.RESERVATION_STATUS_RESERVED,
    ReservationStatus.REJECTED: product_pb2.RESERVATION_STATUS_REJECTED,
    ReservationStatus.RELEASED: product_pb2.RESERVATION_STATUS_RELEASED,
    ReservationStatus.COMMITTED: product_pb2.RESERVATION_STATUS_COMMITTED,
}


def product_message(product: Product) -> product_pb2.Product:
    """The proto form of a product."""
    return product_pb2.Product(
        id=product.id,
        sku=product.sku,
        name=product.name,
        description=product.description,
        price_cents=product.price_cents,
        stock=product.stock,
        create_time=product.create_time,
        update_time=product.update_time,
        etag=product.etag,
    )


def _span_ids(**ids: str) -> None:
    # Set before validation so that refused calls carry them too; an id has 36 characters,
    # and hostile input is cut short rather than copied into the trace.
    set_span_attributes(**{name: value[:ID_MAX_LENGTH] for name, value in ids.items()})


def _status(reservation: Reservation) -> product_pb2.ReservationStatus:
    return _STATUS[reservation.status]


class ProductServicer(product_pb2_grpc.ProductServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def CreateProduct(
        self, request: product_pb2.CreateProductRequest, context: aio.ServicerContext
    ) -> product_pb2.Product:
        p = request.product
        product = await services.create_product(
            deps=self._deps,
            caller=current_principal(),
            sku=p.sku,
            name=p.name,
            description=p.description,
            price_cents=p.price_cents,
            stock=p.stock,
        )
        _span_ids(product_id=product.id)
        return product_message(product)

    async def GetProduct(
        self, request: product_pb2.GetProductRequest, context: aio.ServicerContext
    ) -> product_pb2.Product:
        _span_ids(product_id=request.id)
        return product_message(await services.get_product(deps=self._deps, product_id=request.id))

    async def ListProducts(
        self, request: product_pb2.ListProductsRequest, context: aio.ServicerContext
    ) -> product_pb2.ListProductsResponse:
        page = await services.list_products(
            deps=self._deps, page_size=request.page_size, page_token=request.page_token
        )
        return product_pb2.ListProductsResponse(
            products=[product_message(p) for p in page.products],
            next_page_token=page.next_page_token,
        )

    async def UpdateProduct(
        self, request: product_pb2.UpdateProductRequest, context: aio.ServicerContext
    ) -> product_pb2.Product:
        p = request.product
        _span_ids(product_id=p.id)
        product = await services.update_product(
            deps=self._deps,
            caller=current_principal(),
            product_id=p.id,
            update_mask=list(request.update_mask.paths),
            sku=p.sku,
            name=p.name,
            description=p.description,
            price_cents=p.price_cents,
            stock=p.stock,
            etag=p.etag,
        )
        return product_message(product)

    async def BatchGetProducts(
        self,
        request: product_pb2.BatchGetProductsRequest,
        context: aio.ServicerContext,
    ) -> product_pb2.BatchGetProductsResponse:
        products = await services.batch_get_products(deps=self._deps, product_ids=list(request.ids))
        return product_pb2.BatchGetProductsResponse(products=[product_message(p) for p in products])

    async def ReserveStock(
        self, request: product_pb2.ReserveStockRequest, context: aio.ServicerContext
    ) -> product_pb2.ReserveStockResponse:
        require_service()
        _span_ids(order_id=request.order_id)
        # the orchestrated saga's call: choreographed orders reserve on order.created
        reservation = await reservations.reserve_stock(
            deps=self._deps,
            order_id=request.order_id,
            items=[StockItem(i.product_id, i.quantity) for i in request.items],
            saga_mode=reservations.ORCHESTRATION,
        )
        return product_pb2.ReserveStockResponse(
            status=_status(reservation), reason=reservation.reason
        )

    async def ReleaseStock(
        self, request: product_pb2.ReleaseStockRequest, context: aio.ServicerContext
    ) -> product_pb2.ReleaseStockResponse:
        caller = require_service()
        _span_ids(order_id=request.order_id)
        reservation = await reservations.release_stock(
            deps=self._deps, order_id=request.order_id, reason=f"released by {caller.user_id}"
        )
        return product_pb2.ReleaseStockResponse(status=_status(reservation))

    async def CommitReservation(
        self,
        request: product_pb2.CommitReservationRequest,
        context: aio.ServicerContext,
    ) -> product_pb2.CommitReservationResponse:
        require_service()
        _span_ids(order_id=request.order_id)
        reservation = await reservations.commit_reservation(
            deps=self._deps, order_id=request.order_id
        )
        return product_pb2.CommitReservationResponse(status=_status(reservation))
