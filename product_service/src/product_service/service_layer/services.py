"""Use cases on the catalogue: create, read, list, update and batch-read products."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from events.v1 import events_pb2
from loguru import logger
from tienda_platform import pagination
from tienda_platform.auth import Principal
from tienda_platform.errors import InvalidArgument, PermissionDenied, Validator
from tienda_platform.ids import is_valid_id, new_id

from product_service.domain.errors import ProductChanged, ProductNotFound
from product_service.domain.model import (
    BATCH_GET_MAX_IDS,
    UPDATABLE_FIELDS,
    Product,
    ProductFields,
    check_description,
    check_id,
    check_name,
    check_price_cents,
    check_sku,
    check_stock,
)
from product_service.service_layer.unit_of_work import AbstractUnitOfWork

Clock = Callable[[], datetime]

# Our own tokens are far shorter; longer input is not worth decoding.
PAGE_TOKEN_MAX_LENGTH = 512


@dataclass(frozen=True)
class Dependencies:
    """What every use case needs; wired once by bootstrap()."""

    uow: Callable[[], AbstractUnitOfWork]
    clock: Clock
    # For queries: a unit of work that only reads (on SQLite it does not take the write lock,
    # so reads never queue behind stock reservations). Without one, queries use `uow`.
    read_uow: Callable[[], AbstractUnitOfWork] | None = None

    def reader(self) -> AbstractUnitOfWork:
        return (self.read_uow or self.uow)()


@dataclass(frozen=True)
class ProductPage:
    products: list[Product]
    next_page_token: str


def record_product_changed(uow: AbstractUnitOfWork, event_type: str, product: Product) -> None:
    """Record product.created or product.updated with the product as it now stands."""
    uow.record_event(
        event_type=event_type,
        subject=f"products/{product.id}",
        payload=events_pb2.ProductChanged(
            product_id=product.id,
            sku=product.sku,
            name=product.name,
            price_cents=product.price_cents,
            stock=product.stock,
        ),
    )


def _require_admin(caller: Principal) -> None:
    if not caller.is_admin:
        raise PermissionDenied("admin role required")


def check_product_fields(
    validator: Validator, *, sku: str, name: str, description: str, price_cents: int, stock: int
) -> ProductFields:
    """Record what is wrong with each field and return them normalised."""
    check_sku(validator, sku)
    name = check_name(validator, name)
    description = check_description(validator, description)
    check_price_cents(validator, price_cents)
    check_stock(validator, stock)
    return ProductFields(
        sku=sku, name=name, description=description, price_cents=price_cents, stock=stock
    )


async def create_product(
    *,
    deps: Dependencies,
    caller: Principal,
    sku: str,
    name: str,
    description: str,
    price_cents: int,
    stock: int,
) -> Product:
    """Add a product to the catalogue (admins only)."""
    _require_admin(caller)
    validator = Validator()
    fields = check_product_fields(
        validator,
        sku=sku,
        name=name,
        description=description,
        price_cents=price_cents,
        stock=stock,
    )
    validator.raise_if_invalid()
    now = deps.clock()
    product = Product(
        id=new_id(),
        sku=fields.sku,
        name=fields.name,
        description=fields.description,
        price_cents=fields.price_cents,
        stock=fields.stock,
        create_time=now,
        update_time=now,
    )
    async with deps.uow() as uow:
        await uow.products.add(product)
        record_product_changed(uow, "product.created", product)
        await uow.commit()
    logger.info("product created", product_id=product.id, user_id=caller.user_id)
    return product


async def get_product(*, deps: Dependencies, product_id: str) -> Product:
    """One product by id."""
    validator = Validator()
    check_id(validator, product_id, "id")
    validator.raise_if_invalid()
    async with deps.reader() as uow:
        product = await uow.products.get(product_id)
    if product is None:
        raise ProductNotFound(product_id)
    return product


async def list_products(*, deps: Dependencies, page_size: int, page_token: str) -> ProductPage:
    """A page of the catalogue by id ascending, which stays stable while products are added."""
    limit = pagination.page_size(page_size)
    after_id = _cursor(page_token)
    async with deps.reader() as uow:
        # One extra row tells whether another page follows.
        products = await uow.products.list_after(after_id=after_id, limit=limit + 1)
    if len(products) <= limit:
        return ProductPage(products=products, next_page_token="")
    page = products[:limit]
    return ProductPage(
        products=page, next_page_token=pagination.encode_page_token({"after": page[-1].id})
    )


def _cursor(page_token: str) -> str | None:
    if len(page_token) > PAGE_TOKEN_MAX_LENGTH:
        raise InvalidArgument.for_field("page_token", "not a page token from this API")
    cursor = pagination.decode_page_token(page_token, ("after",))
    if cursor is None:
        return None
    after = str(cursor["after"])
    if not is_valid_id(after):
        raise InvalidArgument.for_field("page_token", "not a page token from this API")
    return after


async def update_product(
    *,
    deps: Dependencies,
    caller: Principal,
    product_id: str,
    update_mask: Sequence[str],
    sku: str,
    name: str,
    description: str,
    price_cents: int,
    stock: int,
    etag: str = "",
) -> Product:
    """Change the fields named in update_mask (admins only); the others keep their values.
    With an etag, only if it is still the product's: else ProductChanged, nothing written."""
    _require_admin(caller)
    validator = Validator()
    check_id(validator, product_id, "id")
    named = set(update_mask)
    if not named:
        validator.check(False, "update_mask", "is required: name the fields to change")
    elif not named <= set(UPDATABLE_FIELDS):
        validator.check(
            False, "update_mask", f"may name only these fields: {', '.join(UPDATABLE_FIELDS)}"
        )
    # Validate every field, but report only those the mask names: the rest are ignored.
    every_field = Validator()
    fields = check_product_fields(
        every_field,
        sku=sku,
        name=name,
        description=description,
        price_cents=price_cents,
        stock=stock,
    )
    validator.violations.extend(v for v in every_field.violations if v.field in named)
    validator.raise_if_invalid()
    changes = {field: getattr(fields, field) for field in named}
    async with deps.uow() as uow:
        # locked: a reservation must not change the stock between the check and the write
        current = await uow.products.get(product_id, for_update=True)
        if current is None:
            raise ProductNotFound(product_id)
        if etag and etag != current.etag:
            raise ProductChanged(product_id)
        await uow.products.update(
            replace(current, **changes, update_time=deps.clock()), fields=named
        )
        # Read back: stock may have moved since `current` was read, and the reply must say so.
        updated = await uow.products.get(product_id)
        assert updated is not None
        record_product_changed(uow, "product.updated", updated)
        await uow.commit()
    logger.info(
        "product updated",
        product_id=product_id,
        user_id=caller.user_id,
        fields=sorted(named),
    )
    return updated


async def batch_get_products(*, deps: Dependencies, product_ids: Sequence[str]) -> list[Product]:
    """The products among product_ids that exist, in the order they were asked for."""
    validator = Validator()
    if not product_ids:
        validator.check(False, "ids", "at least one id is required")
    elif len(product_ids) > BATCH_GET_MAX_IDS:
        validator.check(False, "ids", f"at most {BATCH_GET_MAX_IDS} ids are allowed")
    else:
        for index, product_id in enumerate(product_ids):
            check_id(validator, product_id, f"ids[{index}]")
    validator.raise_if_invalid()
    async with deps.reader() as uow:
        found = {p.id: p for p in await uow.products.get_many(set(product_ids))}
    return [found[product_id] for product_id in product_ids if product_id in found]
