"""Tiny in-process upstreams: real grpc.aio servers with the generated servicer base classes,
the platform's error mapping (so statuses carry google.rpc details) and grpc.health.v1."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import grpc
from auth.v1 import auth_pb2, auth_pb2_grpc
from gateway.config import Settings
from google.protobuf import empty_pb2, timestamp_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from order.v1 import order_pb2, order_pb2_grpc
from product.v1 import product_pb2, product_pb2_grpc
from tienda_platform.errors import (
    Aborted,
    FieldViolation,
    InvalidArgument,
    NotFound,
    Unauthenticated,
)
from tienda_platform.interceptors import ErrorMappingInterceptor

MUG_ID = "0190a000-0000-7000-8000-000000000001"
MUG_ETAG = "5e1f0c2a9d3b7e8f6a4c1d20"
PEN_ID = "0190a000-0000-7000-8000-000000000002"
ORDER_ID = "0190a000-0000-7000-8000-0000000000a1"
CUSTOMER_ID = "0190a000-0000-7000-8000-0000000000c1"
CREATED = timestamp_pb2.Timestamp(seconds=1_700_000_000)


@dataclass
class Recorder:
    """What an upstream was asked: (rpc name, request, call metadata)."""

    calls: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)

    def record(self, rpc: str, request: Any, context: grpc.aio.ServicerContext) -> None:
        self.calls.append((rpc, request, dict(context.invocation_metadata() or ())))

    def last(self, rpc: str) -> tuple[Any, str | None]:
        """The last request of `rpc` and its authorization metadata, if any."""
        _, request, metadata = next(c for c in reversed(self.calls) if c[0] == rpc)
        return request, metadata.get("authorization")

    def last_metadata(self, rpc: str) -> dict[str, Any]:
        return next(c for c in reversed(self.calls) if c[0] == rpc)[2]


PRODUCTS = {
    MUG_ID: product_pb2.Product(
        id=MUG_ID,
        sku="MUG-1",
        name="Mug",
        price_cents=1250,
        stock=7,
        create_time=CREATED,
        etag=MUG_ETAG,
    ),
    PEN_ID: product_pb2.Product(id=PEN_ID, sku="PEN-1", name="Pen", price_cents=300, stock=0),
}


class FakeProducts(product_pb2_grpc.ProductServiceServicer, Recorder):
    """Two fixed products; id "boom" raises a plain exception, "slow" never answers."""

    def __init__(self) -> None:
        Recorder.__init__(self)
        self.never = asyncio.Event()

    async def GetProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("GetProduct", request, context)
        if request.id == "boom":
            raise RuntimeError("secret boom from 10.1.2.3:5432")
        if request.id == "slow":
            await self.never.wait()
        if request.id == "not-a-uuid":
            raise InvalidArgument.for_field("id", "must be a UUID")
        if request.id not in PRODUCTS:
            raise NotFound(f"product {request.id} not found")
        return PRODUCTS[request.id]

    async def ListProducts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("ListProducts", request, context)
        products = list(PRODUCTS.values())[: request.page_size or None]
        return product_pb2.ListProductsResponse(products=products, next_page_token="next")

    async def CreateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("CreateProduct", request, context)
        violations = [
            FieldViolation(f"product.{name}", "is required")
            for name in ("sku", "name")
            if not getattr(request.product, name)
        ]
        if violations:
            raise InvalidArgument("invalid product", violations)
        created = product_pb2.Product()
        created.CopyFrom(request.product)
        created.id = "0190a000-0000-7000-8000-000000000099"
        return created

    async def UpdateProduct(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("UpdateProduct", request, context)
        if request.product.etag and request.product.etag != MUG_ETAG:
            raise Aborted(f"product {request.product.id} changed since the etag given was read")
        updated = product_pb2.Product()
        updated.CopyFrom(PRODUCTS[MUG_ID])
        request.update_mask.MergeMessage(request.product, updated)
        return updated

    async def BatchGetProducts(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("BatchGetProducts", request, context)
        return product_pb2.BatchGetProductsResponse(
            products=[PRODUCTS[i] for i in request.ids if i in PRODUCTS]
        )


def the_order() -> Any:
    return order_pb2.Order(
        id=ORDER_ID,
        customer_id=CUSTOMER_ID,
        # not auth's "Ada" and address: the details tell which of the two the customer came
        # from
        customer_name="Ada Lovelace",
        customer_email="ada.lovelace@example.com",
        status=order_pb2.ORDER_STATUS_CONFIRMED,
        items=[
            order_pb2.OrderItem(
                product_id=MUG_ID, product_name="Mug", quantity=2, unit_price_cents=1250
            ),
            order_pb2.OrderItem(
                product_id=PEN_ID, product_name="Pen", quantity=1, unit_price_cents=300
            ),
        ],
        total_cents=2800,
        create_time=CREATED,
    )


class FakeOrders(order_pb2_grpc.OrderServiceServicer, Recorder):
    """One order; every call needs some bearer token, as the real service's would."""

    def __init__(self) -> None:
        Recorder.__init__(self)

    def _require_token(self, context: grpc.aio.ServicerContext) -> None:
        if "authorization" not in dict(context.invocation_metadata() or ()):
            raise Unauthenticated("missing bearer token")

    async def GetOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("GetOrder", request, context)
        self._require_token(context)
        if request.id != ORDER_ID:
            raise NotFound("order not found")
        return the_order()

    async def CreateOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("CreateOrder", request, context)
        self._require_token(context)
        return the_order()

    async def CancelOrder(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("CancelOrder", request, context)
        self._require_token(context)
        order = the_order()
        order.id = request.id
        order.status = order_pb2.ORDER_STATUS_CANCELLED
        return order


class FakeAuth(auth_pb2_grpc.AuthServiceServicer, Recorder):
    def __init__(self) -> None:
        Recorder.__init__(self)
        self.deleted_users: set[str] = set()

    def _user(self, user_id: str) -> Any:
        return auth_pb2.User(
            id=user_id, email="ada@example.com", full_name="Ada", role=auth_pb2.ROLE_CUSTOMER
        )

    async def GetUser(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("GetUser", request, context)
        if request.id in self.deleted_users:
            raise NotFound("user not found")
        return self._user(request.id)

    async def GetCurrentUser(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("GetCurrentUser", request, context)
        return self._user(CUSTOMER_ID)

    async def DeleteCurrentUser(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("DeleteCurrentUser", request, context)
        return empty_pb2.Empty()

    async def Login(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("Login", request, context)
        return auth_pb2.TokenResponse(
            access_token="a", refresh_token="r", token_type="Bearer", expires_in=900
        )

    async def GetJwks(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.record("GetJwks", request, context)
        return auth_pb2.Jwks(keys=[auth_pb2.Jwk(kty="OKP", crv="Ed25519", x="abc", kid="k1")])


@dataclass
class Upstream:
    name: str
    service: str
    fake: Any
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    target: str


async def start_upstream(name: str, fake: Any, add: Any, service: str) -> Upstream:
    """Serve one fake on 127.0.0.1:<free port>, SERVING on grpc.health.v1."""
    server = grpc.aio.server(interceptors=[ErrorMappingInterceptor()])
    add(fake, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await checks.set(service, health_pb2.HealthCheckResponse.SERVING)
    return Upstream(name, service, fake, server, checks, f"127.0.0.1:{port}")


async def start_all() -> dict[str, Upstream]:
    """The three fake upstreams, by short name."""
    started = await asyncio.gather(
        start_upstream(
            "auth",
            FakeAuth(),
            auth_pb2_grpc.add_AuthServiceServicer_to_server,
            "auth.v1.AuthService",
        ),
        start_upstream(
            "product",
            FakeProducts(),
            product_pb2_grpc.add_ProductServiceServicer_to_server,
            "product.v1.ProductService",
        ),
        start_upstream(
            "order",
            FakeOrders(),
            order_pb2_grpc.add_OrderServiceServicer_to_server,
            "order.v1.OrderService",
        ),
    )
    return {upstream.name: upstream for upstream in started}


def gateway_settings(upstreams: dict[str, Upstream], **overrides: Any) -> Settings:
    """Gateway settings pointing at these upstreams."""
    return Settings(
        auth_grpc_target=upstreams["auth"].target,
        product_grpc_target=upstreams["product"].target,
        order_grpc_target=upstreams["order"].target,
        **overrides,
    )
