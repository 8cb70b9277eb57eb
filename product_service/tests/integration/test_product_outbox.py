"""Catalogue and stock changes publish their events through the transactional outbox, on real
databases and a real Redis: same transaction as the change, and relayed to
tienda.product.events."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from events.v1 import events_pb2
from google.protobuf.message import Message
from product_service.bootstrap import ProductApp
from product_service.domain.model import ReservationStatus, StockItem
from product_service.service_layer import reservations, services
from product_service.service_layer.services import Dependencies
from product_service.service_layer.unit_of_work import SqlUnitOfWork
from tienda_platform.database import session_factory
from tienda_platform.ids import new_id
from tienda_platform.testing import TokenMint, eventually

from .factories import change_product, create_product, running, settings_for
from .product_streams import all_sent, outbox_events, stream_events

pytestmark = pytest.mark.integration

DECLINED = "payment declined"


class FailsAfterRecording(SqlUnitOfWork):
    """A unit of work that crashes right after an event is recorded, before the commit."""

    def record_event(self, **event: Any) -> None:
        super().record_event(**event)
        raise RuntimeError("crash between record_event and commit")


async def _every_change(deps: Dependencies) -> tuple[str, list[tuple[str, str, Message]]]:
    """Create, update, reserve (twice), reject, commit, release: the events they must record,
    each repeated call adding none. Returns the product id and the expected events."""
    mug = await create_product(deps, "MUG", stock=5, price_cents=1200)
    await change_product(deps, mug.id, name="Big mug")
    kept, refused = new_id(), new_id()
    for order_id, quantity in ((kept, 2), (refused, 9)) * 2:
        await reservations.reserve_stock(
            deps=deps, order_id=order_id, items=[StockItem(mug.id, quantity)]
        )
    for _ in range(2):
        await reservations.commit_reservation(deps=deps, order_id=kept)
    for _ in range(2):
        await reservations.release_stock(deps=deps, order_id=kept, reason=DECLINED)
    product = f"products/{mug.id}"
    return mug.id, [
        (
            "product.created",
            product,
            events_pb2.ProductChanged(
                product_id=mug.id, sku="MUG", name="Product MUG", price_cents=1200, stock=5
            ),
        ),
        (
            "product.updated",
            product,
            events_pb2.ProductChanged(
                product_id=mug.id, sku="MUG", name="Big mug", price_cents=1200, stock=5
            ),
        ),
        ("stock.reserved", f"orders/{kept}", events_pb2.StockReserved(order_id=kept)),
        (
            "stock.rejected",
            f"orders/{refused}",
            events_pb2.StockRejected(order_id=refused, reason="insufficient stock for MUG"),
        ),
        ("stock.committed", f"orders/{kept}", events_pb2.StockCommitted(order_id=kept)),
        (
            "stock.released",
            f"orders/{kept}",
            events_pb2.StockReleased(order_id=kept, reason=DECLINED),
        ),
    ]


async def test_each_change_commits_with_its_event(app: ProductApp) -> None:
    assert app.engine is not None
    _, expected = await _every_change(app.deps)
    events = await outbox_events(app.engine)
    assert [(e.envelope.type, e.envelope.subject, e.payload) for e in events] == expected
    assert {e.envelope.source for e in events} == {"product_service"}
    assert not await all_sent(app.engine)  # no relay runs here


async def test_a_failure_after_recording_rolls_back_the_change_and_its_event(
    app: ProductApp,
) -> None:
    assert app.engine is not None
    failing = replace(app.deps, uow=partial(FailsAfterRecording, session_factory(app.engine)))

    with pytest.raises(RuntimeError):
        await create_product(failing, "LOST", stock=1)
    assert await services.list_products(deps=app.deps, page_size=10, page_token="") == (
        services.ProductPage(products=[], next_page_token="")
    )

    mug = await create_product(app.deps, "MUG", stock=5)
    order_id = new_id()
    with pytest.raises(RuntimeError):
        await reservations.reserve_stock(
            deps=failing, order_id=order_id, items=[StockItem(mug.id, 2)]
        )
    with pytest.raises(RuntimeError):
        await reservations.release_stock(deps=failing, order_id=new_id(), reason=DECLINED)
    await reservations.reserve_stock(deps=app.deps, order_id=order_id, items=[StockItem(mug.id, 2)])
    with pytest.raises(RuntimeError):
        await reservations.commit_reservation(deps=failing, order_id=order_id)
    with pytest.raises(RuntimeError):
        await reservations.release_stock(deps=failing, order_id=order_id, reason=DECLINED)

    async with app.deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
        assert stored is not None and stored.status is ReservationStatus.RESERVED
        product = await uow.products.get(mug.id)
        assert product is not None and product.stock == 3
    assert [e.envelope.type for e in await outbox_events(app.engine)] == [
        "product.created",
        "stock.reserved",
    ]


async def test_the_relay_publishes_every_event_to_the_product_stream(
    database_url: str, redis_url: str, tmp_path: Path, token_mint: TokenMint
) -> None:
    settings = settings_for(database_url, tmp_path, redis_url=redis_url)
    async with running(settings, token_mint) as app:
        assert app.engine is not None
        _, expected = await _every_change(app.deps)
        await eventually(lambda: all_sent(app.engine))
        published = await stream_events(redis_url)
        assert [(e.envelope.type, e.envelope.subject, e.payload) for e in published] == expected
        assert [e.envelope for e in published] == [
            e.envelope for e in await outbox_events(app.engine)
        ]
