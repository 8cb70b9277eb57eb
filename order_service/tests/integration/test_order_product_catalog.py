"""The gRPC product catalogue against an in-process product.v1.ProductService stand-in: the
caller's token for reading products, order_service's service token for the stock RPCs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from auth.v1 import auth_pb2, auth_pb2_grpc
from order_service.adapters.product_catalog import GrpcProductCatalog
from order_service.bootstrap import bootstrap
from order_service.config import Settings
from order_service.service_layer.ports import ProductSnapshot, Reservation, StockLine
from product.v1 import product_pb2, product_pb2_grpc
from tienda_platform.auth import Principal
from tienda_platform.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable

from ..unit.fakes import FakeDatabase, FakeUnitOfWork

pytestmark = pytest.mark.integration

CALLER = Principal(user_id="u-1", role="customer", token="caller.jwt.token")


async def service_token() -> str:
    return "service.jwt.token"


class StandInProductService(product_pb2_grpc.ProductServiceServicer):
    """Answers as product_service would; `fail_with` makes every call fail with that code."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []
        self.requests: list[Any] = []
        self.fail_with: grpc.StatusCode | None = None
        self.hang = False

    async def _enter(self, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.requests.append(request)
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata() or ()})
        if self.hang:
            await asyncio.Event().wait()
        if self.fail_with is not None:
            await context.abort(self.fail_with, f"stand-in says {self.fail_with.name}")

    async def BatchGetProducts(self, request, context):
        await self._enter(request, context)
        return product_pb2.BatchGetProductsResponse(
            products=[
                product_pb2.Product(id=i, name=f"name of {i}", price_cents=100 + n)
                for n, i in enumerate(request.ids)
                if i != "missing"
            ]
        )

    async def ReserveStock(self, request, context):
        await self._enter(request, context)
        if any(item.quantity > 5 for item in request.items):
            return product_pb2.ReserveStockResponse(
                status=product_pb2.RESERVATION_STATUS_REJECTED,
                reason="insufficient stock for SKU-1",
            )
        return product_pb2.ReserveStockResponse(status=product_pb2.RESERVATION_STATUS_RESERVED)

    async def ReleaseStock(self, request, context):
        await self._enter(request, context)
        if request.order_id == "never-reserved":
            await context.abort(grpc.StatusCode.NOT_FOUND, "no reservation")
        return product_pb2.ReleaseStockResponse(status=product_pb2.RESERVATION_STATUS_RELEASED)

    async def CommitReservation(self, request, context):
        await self._enter(request, context)
        return product_pb2.CommitReservationResponse(
            status=product_pb2.RESERVATION_STATUS_COMMITTED
        )


@pytest.fixture
async def stand_in() -> AsyncIterator[tuple[StandInProductService, int]]:
    service = StandInProductService()
    server = grpc.aio.server()
    product_pb2_grpc.add_ProductServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield service, port
    await server.stop(0)


@pytest.fixture
async def catalog(
    stand_in: tuple[StandInProductService, int],
) -> AsyncIterator[GrpcProductCatalog]:
    catalog = GrpcProductCatalog.connect(
        f"127.0.0.1:{stand_in[1]}", timeout=2.0, service_token=service_token
    )
    yield catalog
    await catalog.close()


async def test_calls_carry_the_right_bearer_token_and_map_the_answers(
    catalog: GrpcProductCatalog, stand_in: tuple[StandInProductService, int]
) -> None:
    service, _ = stand_in
    products = await catalog.batch_get_products(ids=["a", "missing", "b"], principal=CALLER)
    assert products == [
        ProductSnapshot("a", "name of a", 100),
        ProductSnapshot("b", "name of b", 102),
    ]
    lines = [StockLine("a", 2), StockLine("b", 6)]
    assert await catalog.reserve_stock(order_id="o-1", lines=lines[:1]) == (
        Reservation(reserved=True)
    )
    assert await catalog.reserve_stock(order_id="o-2", lines=lines) == (
        Reservation(reserved=False, reason="insufficient stock for SKU-1")
    )
    await catalog.commit_reservation(order_id="o-1")
    await catalog.release_stock(order_id="o-1")
    await catalog.release_stock(order_id="never-reserved")

    tokens = [m["authorization"] for m in service.metadata]
    assert tokens[0] == "Bearer caller.jwt.token"
    assert set(tokens[1:]) == {"Bearer service.jwt.token"}
    assert service.requests[1] == product_pb2.ReserveStockRequest(
        order_id="o-1", items=[product_pb2.StockItem(product_id="a", quantity=2)]
    )


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.UNAVAILABLE, Unavailable),
        (grpc.StatusCode.NOT_FOUND, NotFound),
        (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
        (grpc.StatusCode.INTERNAL, Unavailable),
        (grpc.StatusCode.PERMISSION_DENIED, Unavailable),
    ],
)
async def test_failures_become_service_errors(
    catalog: GrpcProductCatalog,
    stand_in: tuple[StandInProductService, int],
    code: grpc.StatusCode,
    error: type[Exception],
) -> None:
    stand_in[0].fail_with = code
    with pytest.raises(error):
        await catalog.batch_get_products(ids=["a"], principal=CALLER)


async def test_a_silent_product_service_is_a_deadline_exceeded(
    stand_in: tuple[StandInProductService, int],
) -> None:
    stand_in[0].hang = True
    catalog = GrpcProductCatalog.connect(
        f"127.0.0.1:{stand_in[1]}", timeout=0.1, service_token=service_token
    )
    try:
        with pytest.raises(DeadlineExceeded):
            await catalog.reserve_stock(order_id="o", lines=[StockLine("a", 1)])
    finally:
        await catalog.close()


async def test_an_unreachable_product_service_is_unavailable() -> None:
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await server.stop(0)  # the port is now closed
    catalog = GrpcProductCatalog.connect(
        f"127.0.0.1:{port}", timeout=5.0, service_token=service_token
    )
    try:
        with pytest.raises(Unavailable, match="product service unavailable"):
            await catalog.commit_reservation(order_id="o")
    finally:
        await catalog.close()


class StandInAuthService(auth_pb2_grpc.AuthServiceServicer):
    """Issues service tokens for one client id and secret, as auth_service does."""

    def __init__(self) -> None:
        self.requests: list[auth_pb2.IssueServiceTokenRequest] = []

    async def IssueServiceToken(self, request, context):
        self.requests.append(request)
        if (request.client_id, request.client_secret) != ("order_service", "s3cret"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "bad client credentials")
        return auth_pb2.TokenResponse(access_token="issued.service.token", expires_in=300)


async def test_bootstrap_gets_a_service_token_with_its_client_credentials(
    stand_in: tuple[StandInProductService, int],
) -> None:
    auth = StandInAuthService()
    server = grpc.aio.server()
    auth_pb2_grpc.add_AuthServiceServicer_to_server(auth, server)
    auth_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    settings = Settings(
        auth_grpc_target=f"127.0.0.1:{auth_port}",
        product_grpc_target=f"127.0.0.1:{stand_in[1]}",
        service_client_secret="s3cret",
    )
    app = bootstrap(settings=settings, uow_factory=lambda: FakeUnitOfWork(FakeDatabase()))
    try:
        await app.deps.catalog.release_stock(order_id="o-1")
        await app.deps.catalog.commit_reservation(order_id="o-1")
    finally:
        await app.cleanup()
        await server.stop(0)
    assert [(r.client_id, r.client_secret) for r in auth.requests] == [("order_service", "s3cret")]
    assert {m["authorization"] for m in stand_in[0].metadata} == {"Bearer issued.service.token"}
