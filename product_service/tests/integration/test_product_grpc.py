"""product.v1.ProductService through a real grpc.aio server: auth, statuses and error details."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from events.v1 import events_pb2
from google.protobuf import field_mask_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from product.v1 import product_pb2, product_pb2_grpc
from product_service.bootstrap import ProductApp, bootstrap
from product_service.entrypoints.grpc_servicer import SERVICE_NAME
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint

from .factories import settings_for
from .product_streams import outbox_events

pytestmark = pytest.mark.integration

Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
async def served(
    database_url: str, broker_url: str, tmp_path: Path, token_mint: TokenMint
) -> AsyncIterator[ProductApp]:
    """Started the way `python -m product_service` starts: NOT_SERVING until prepared."""
    app = bootstrap(
        settings=settings_for(database_url, tmp_path, redis_url=broker_url),
        verifier=token_mint.verifier(),
    )
    await app.server.start()
    try:
        yield app
    finally:
        await app.server.stop()
        await app.close()


@pytest.fixture
async def app(served: ProductApp) -> ProductApp:
    await served.prepare()
    await served.server.mark_serving()
    return served


@pytest.fixture
async def channel(served: ProductApp) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{served.server.bound_port}") as channel:
        yield channel


@pytest.fixture
def stub(app: ProductApp, channel: grpc.aio.Channel) -> product_pb2_grpc.ProductServiceStub:
    return product_pb2_grpc.ProductServiceStub(channel)


@pytest.fixture
def admin(token_mint: TokenMint) -> Metadata:
    return (("authorization", f"Bearer {token_mint.token(new_id(), 'admin')}"),)


@pytest.fixture
def customer(token_mint: TokenMint) -> Metadata:
    return (("authorization", f"Bearer {token_mint.token(new_id(), 'customer')}"),)


@pytest.fixture
def service(token_mint: TokenMint) -> Metadata:
    """order_service, as auth_service's IssueServiceToken would vouch for it."""
    return (("authorization", f"Bearer {token_mint.token('service:order_service', 'service')}"),)


def _product(**fields: object) -> product_pb2.Product:
    values: dict[str, object] = {
        "sku": "MUG-1",
        "name": "Ceramic mug",
        "description": "Holds 350 ml.",
        "price_cents": 1299,
        "stock": 10,
        **fields,
    }
    return product_pb2.Product(**values)


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    trailer = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(trailer)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    return [v.field for v in bad_request.field_violations]


async def test_health_is_not_serving_until_prepared(
    served: ProductApp, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await served.prepare()
    await served.server.mark_serving()
    assert (await health.Check(request)).status == health_pb2.HealthCheckResponse.SERVING


async def test_admin_creates_gets_lists_and_updates(
    stub: product_pb2_grpc.ProductServiceStub, admin: Metadata
) -> None:
    created = [
        await stub.CreateProduct(
            product_pb2.CreateProductRequest(product=_product(sku=f"SKU-{i}")), metadata=admin
        )
        for i in range(3)
    ]
    first = created[0]
    assert (first.sku, first.name, first.price_cents, first.stock) == (
        "SKU-0",
        "Ceramic mug",
        1299,
        10,
    )
    assert first.create_time.seconds > 0 and first.update_time == first.create_time

    # Reading needs no token.
    assert await stub.GetProduct(product_pb2.GetProductRequest(id=first.id)) == first

    page = await stub.ListProducts(product_pb2.ListProductsRequest(page_size=2))
    assert [p.id for p in page.products] == [c.id for c in created[:2]]
    assert page.next_page_token
    rest = await stub.ListProducts(
        product_pb2.ListProductsRequest(page_size=2, page_token=page.next_page_token)
    )
    assert [p.id for p in rest.products] == [created[2].id]
    assert rest.next_page_token == ""

    updated = await stub.UpdateProduct(
        product_pb2.UpdateProductRequest(
            product=product_pb2.Product(id=first.id, name="Big mug", price_cents=1599),
            update_mask=field_mask_pb2.FieldMask(paths=["name", "price_cents"]),
        ),
        metadata=admin,
    )
    assert (updated.sku, updated.name, updated.price_cents, updated.stock) == (
        "SKU-0",
        "Big mug",
        1599,
        10,
    )
    assert await stub.GetProduct(product_pb2.GetProductRequest(id=first.id)) == updated

    batch = await stub.BatchGetProducts(
        product_pb2.BatchGetProductsRequest(ids=[created[2].id, new_id(), first.id])
    )
    assert [p.id for p in batch.products] == [created[2].id, first.id]


async def test_an_update_with_a_stale_etag_is_aborted_and_changes_nothing(
    stub: product_pb2_grpc.ProductServiceStub, admin: Metadata, service: Metadata
) -> None:
    created = await stub.CreateProduct(
        product_pb2.CreateProductRequest(product=_product(stock=5)), metadata=admin
    )
    read = await stub.GetProduct(product_pb2.GetProductRequest(id=created.id))
    assert len(read.etag) == 24 and read.etag == created.etag

    # an order takes stock after the admin read the product: its etag changes
    await stub.ReserveStock(
        product_pb2.ReserveStockRequest(
            order_id=new_id(), items=[product_pb2.StockItem(product_id=created.id, quantity=2)]
        ),
        metadata=service,
    )
    now = await stub.GetProduct(product_pb2.GetProductRequest(id=created.id))
    assert now.stock == 3 and now.etag != read.etag

    def set_stock(stock: int, etag: str) -> product_pb2.UpdateProductRequest:
        return product_pb2.UpdateProductRequest(
            product=product_pb2.Product(id=created.id, stock=stock, etag=etag),
            update_mask=field_mask_pb2.FieldMask(paths=["stock"]),
        )

    with pytest.raises(grpc.aio.AioRpcError) as stale:
        await stub.UpdateProduct(set_stock(10, read.etag), metadata=admin)
    assert stale.value.code() == grpc.StatusCode.ABORTED
    assert "changed since" in (stale.value.details() or "")
    assert await stub.GetProduct(product_pb2.GetProductRequest(id=created.id)) == now

    updated = await stub.UpdateProduct(set_stock(10, now.etag), metadata=admin)
    assert updated.stock == 10 and updated.etag not in (now.etag, read.etag)
    assert await stub.GetProduct(product_pb2.GetProductRequest(id=created.id)) == updated
    # without an etag the update is unconditional, as before
    assert (await stub.UpdateProduct(set_stock(4, ""), metadata=admin)).stock == 4


async def test_who_may_create(
    stub: product_pb2_grpc.ProductServiceStub, customer: Metadata
) -> None:
    request = product_pb2.CreateProductRequest(product=_product())
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.CreateProduct(request, metadata=customer)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.CreateProduct(request)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await stub.CreateProduct(request, metadata=(("authorization", "Bearer a.b.c"),))
    assert forged.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_a_bad_token_is_refused_even_on_a_public_method(
    stub: product_pb2_grpc.ProductServiceStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ListProducts(
            product_pb2.ListProductsRequest(), metadata=(("authorization", "Bearer nonsense"),)
        )
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("product", "fields"),
    [
        (_product(sku=""), ["sku"]),
        (_product(price_cents=-1), ["price_cents"]),
        (_product(name="n" * 1_000_000), ["name"]),
        (
            _product(sku="", name="", price_cents=0, stock=-1),
            ["sku", "name", "price_cents", "stock"],
        ),
    ],
)
async def test_bad_products_are_invalid_with_details(
    stub: product_pb2_grpc.ProductServiceStub,
    admin: Metadata,
    product: product_pb2.Product,
    fields: list[str],
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.CreateProduct(product_pb2.CreateProductRequest(product=product), metadata=admin)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value) == fields


async def test_bad_ids_and_masks_are_invalid_with_details(
    stub: product_pb2_grpc.ProductServiceStub, admin: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as bad_id:
        await stub.GetProduct(product_pb2.GetProductRequest(id="not-a-uuid"))
    assert bad_id.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(bad_id.value) == ["id"]

    with pytest.raises(grpc.aio.AioRpcError) as huge_id:
        await stub.GetProduct(product_pb2.GetProductRequest(id="x" * 1_000_000))
    assert _violations(huge_id.value) == ["id"]

    with pytest.raises(grpc.aio.AioRpcError) as no_mask:
        await stub.UpdateProduct(
            product_pb2.UpdateProductRequest(product=product_pb2.Product(id=new_id(), name="x")),
            metadata=admin,
        )
    assert _violations(no_mask.value) == ["update_mask"]

    with pytest.raises(grpc.aio.AioRpcError) as bad_page:
        await stub.ListProducts(product_pb2.ListProductsRequest(page_size=-1))
    assert _violations(bad_page.value) == ["page_size"]


async def test_not_found_and_already_exists(
    stub: product_pb2_grpc.ProductServiceStub, admin: Metadata
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetProduct(product_pb2.GetProductRequest(id=new_id()))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    request = product_pb2.CreateProductRequest(product=_product())
    await stub.CreateProduct(request, metadata=admin)
    with pytest.raises(grpc.aio.AioRpcError) as duplicate:
        await stub.CreateProduct(request, metadata=admin)
    assert duplicate.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_reservation_rpcs_need_a_token_and_follow_the_state_machine(
    app: ProductApp, stub: product_pb2_grpc.ProductServiceStub, admin: Metadata, service: Metadata
) -> None:
    product = await stub.CreateProduct(
        product_pb2.CreateProductRequest(product=_product(stock=3)), metadata=admin
    )
    order_id = new_id()
    reserve = product_pb2.ReserveStockRequest(
        order_id=order_id, items=[product_pb2.StockItem(product_id=product.id, quantity=2)]
    )
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await stub.ReserveStock(reserve)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED

    reserved = await stub.ReserveStock(reserve, metadata=service)
    assert reserved.status == product_pb2.RESERVATION_STATUS_RESERVED
    assert (await stub.ReserveStock(reserve, metadata=service)) == reserved
    assert (await stub.GetProduct(product_pb2.GetProductRequest(id=product.id))).stock == 1

    refused_order = new_id()
    too_many = await stub.ReserveStock(
        product_pb2.ReserveStockRequest(
            order_id=refused_order,
            items=[product_pb2.StockItem(product_id=product.id, quantity=2)],
        ),
        metadata=service,
    )
    assert too_many.status == product_pb2.RESERVATION_STATUS_REJECTED
    assert too_many.reason == "insufficient stock for MUG-1"
    # the events say the orders' sagas are orchestrated: order_service's choreography
    # handlers acknowledge them without a transaction
    assert app.engine is not None
    decisions = {
        (e.envelope.type, e.envelope.subject): e.payload
        for e in await outbox_events(app.engine)
        if e.envelope.type in ("stock.reserved", "stock.rejected")
    }
    assert decisions == {
        ("stock.reserved", f"orders/{order_id}"): events_pb2.StockReserved(
            order_id=order_id, saga_mode="orchestration"
        ),
        ("stock.rejected", f"orders/{refused_order}"): events_pb2.StockRejected(
            order_id=refused_order, reason="insufficient stock for MUG-1", saga_mode="orchestration"
        ),
    }

    commit = product_pb2.CommitReservationRequest(order_id=order_id)
    assert (await stub.CommitReservation(commit, metadata=service)).status == (
        product_pb2.RESERVATION_STATUS_COMMITTED
    )
    release = product_pb2.ReleaseStockRequest(order_id=order_id)
    assert (await stub.ReleaseStock(release, metadata=service)).status == (
        product_pb2.RESERVATION_STATUS_RELEASED
    )
    assert (await stub.GetProduct(product_pb2.GetProductRequest(id=product.id))).stock == 3

    with pytest.raises(grpc.aio.AioRpcError) as not_reserved:
        await stub.CommitReservation(commit, metadata=service)
    assert not_reserved.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_reservation_rpcs_refuse_customers_and_admins(
    stub: product_pb2_grpc.ProductServiceStub,
    admin: Metadata,
    customer: Metadata,
    service: Metadata,
) -> None:
    product = await stub.CreateProduct(
        product_pb2.CreateProductRequest(product=_product(stock=3)), metadata=admin
    )
    order_id = new_id()
    calls = [
        (
            stub.ReserveStock,
            product_pb2.ReserveStockRequest(
                order_id=order_id, items=[product_pb2.StockItem(product_id=product.id, quantity=1)]
            ),
        ),
        (stub.CommitReservation, product_pb2.CommitReservationRequest(order_id=order_id)),
        (stub.ReleaseStock, product_pb2.ReleaseStockRequest(order_id=order_id)),
    ]
    for method, request in calls:
        for metadata in (customer, admin):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await method(request, metadata=metadata)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Nothing happened: no stock taken, not even a release tombstone.
    assert (await stub.GetProduct(product_pb2.GetProductRequest(id=product.id))).stock == 3
    reserved = await stub.ReserveStock(calls[0][1], metadata=service)
    assert reserved.status == product_pb2.RESERVATION_STATUS_RESERVED


async def test_a_reservation_full_of_mistakes_is_invalid_not_a_crash(
    stub: product_pb2_grpc.ProductServiceStub, service: Metadata
) -> None:
    # 50 items with two violations each: the details must still reach the client.
    items = [product_pb2.StockItem(product_id=f"bad-product-{i}", quantity=0) for i in range(50)]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.ReserveStock(
            product_pb2.ReserveStockRequest(order_id="bad-order", items=items), metadata=service
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(caught.value)[:3] == ["order_id", "items[0].product_id", "items[0].quantity"]
