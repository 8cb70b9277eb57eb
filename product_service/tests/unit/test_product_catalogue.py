"""Creating, reading, listing, updating and batch-reading products over fakes."""

from __future__ import annotations

from typing import Any

import pytest
from product_service.domain.model import Product
from product_service.service_layer import services
from product_service.service_layer.demo_catalogue import DEMO_PRODUCTS, seed_demo_products
from product_service.service_layer.services import Dependencies
from tienda_platform.auth import Principal
from tienda_platform.errors import (
    AlreadyExists,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Validator,
)
from tienda_platform.ids import is_valid_id, new_id
from tienda_platform.pagination import encode_page_token
from tienda_platform.testing import fixed_id

from .fakes import FakeClock, FakeDatabase

pytestmark = pytest.mark.unit

VALID: dict[str, Any] = {
    "sku": "MUG-1",
    "name": "Mug",
    "description": "A mug.",
    "price_cents": 1299,
    "stock": 5,
}


async def _create(deps: Dependencies, admin: Principal, **fields: Any) -> Product:
    return await services.create_product(deps=deps, caller=admin, **{**VALID, **fields})


def _fields(error: pytest.ExceptionInfo[InvalidArgument]) -> list[str]:
    return [v.field for v in error.value.violations]


async def test_an_admin_creates_a_product(
    deps: Dependencies, admin: Principal, database: FakeDatabase, clock: FakeClock
) -> None:
    product = await _create(deps, admin, name="  Mug  ")
    assert is_valid_id(product.id)
    assert (product.sku, product.name, product.price_cents, product.stock) == (
        "MUG-1",
        "Mug",
        1299,
        5,
    )
    assert product.create_time == product.update_time == clock.now
    assert database.committed.products == {product.id: product}


async def test_a_customer_may_not_create_a_product(
    deps: Dependencies, customer: Principal, database: FakeDatabase
) -> None:
    with pytest.raises(PermissionDenied):
        await _create(deps, customer)
    assert database.committed.products == {}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", ""),
        ("sku", "has space"),
        ("sku", "ü-umlaut"),
        ("sku", "A" * 65),
        ("name", ""),
        ("name", "   "),
        ("name", "N" * 201),
        ("name", "x" * 1_000_000),
        ("name", "bell\x07"),
        ("description", "d" * 5001),
        ("description", "nul\x00byte"),
        ("price_cents", 0),
        ("price_cents", -1),
        ("price_cents", 10_000_000_01),
        ("stock", -1),
        ("stock", 1_000_001),
    ],
)
async def test_invalid_fields_are_refused(
    deps: Dependencies, admin: Principal, database: FakeDatabase, field: str, value: Any
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await _create(deps, admin, **{field: value})
    assert _fields(error) == [field]
    assert database.committed.products == {}


async def test_boundary_values_are_accepted(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    smallest = await _create(
        deps, admin, sku="a" * 64, name="n" * 200, description="", price_cents=1, stock=0
    )
    description = "line one\nline two\ttabbed\r\n" + "d" * 4970
    largest = await _create(
        deps,
        admin,
        sku="Z.9_-",
        description=description,
        price_cents=10_000_000_00,
        stock=1_000_000,
    )
    stored = database.committed.products
    assert (stored[smallest.id].sku, stored[smallest.id].name) == ("a" * 64, "n" * 200)
    assert (stored[smallest.id].price_cents, stored[smallest.id].stock) == (1, 0)
    assert stored[largest.id].description == description
    assert (stored[largest.id].price_cents, stored[largest.id].stock) == (10_000_000_00, 1_000_000)


async def test_every_violation_is_reported_at_once(deps: Dependencies, admin: Principal) -> None:
    with pytest.raises(InvalidArgument) as error:
        await _create(deps, admin, sku="", name="", price_cents=-5, stock=-1)
    assert _fields(error) == ["sku", "name", "price_cents", "stock"]


async def test_a_duplicate_sku_already_exists(deps: Dependencies, admin: Principal) -> None:
    await _create(deps, admin)
    with pytest.raises(AlreadyExists):
        await _create(deps, admin, name="Another mug")


async def test_get_product_by_id(deps: Dependencies, admin: Principal) -> None:
    product = await _create(deps, admin)
    assert await services.get_product(deps=deps, product_id=product.id) == product


@pytest.mark.parametrize("bad", ["", "not-a-uuid", "x" * 1_000_000, fixed_id(1).upper()])
async def test_get_with_a_malformed_id_is_invalid(deps: Dependencies, bad: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        await services.get_product(deps=deps, product_id=bad)
    assert _fields(error) == ["id"]


async def test_get_an_unknown_product_is_not_found(deps: Dependencies) -> None:
    with pytest.raises(NotFound):
        await services.get_product(deps=deps, product_id=new_id())


async def test_list_pages_through_every_product_once_by_id(
    deps: Dependencies, admin: Principal
) -> None:
    created = [await _create(deps, admin, sku=f"SKU-{i}") for i in range(5)]
    seen: list[Product] = []
    token = ""
    pages = 0
    while True:
        page = await services.list_products(deps=deps, page_size=2, page_token=token)
        pages += 1
        seen.extend(page.products)
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert [p.id for p in seen] == sorted(p.id for p in created)


async def test_a_product_added_between_pages_does_not_shift_the_next_page(
    deps: Dependencies, admin: Principal
) -> None:
    first = [await _create(deps, admin, sku=f"SKU-{i}") for i in range(3)]
    page = await services.list_products(deps=deps, page_size=2, page_token="")
    late = await _create(deps, admin, sku="SKU-late")
    rest = await services.list_products(deps=deps, page_size=2, page_token=page.next_page_token)
    assert [p.id for p in rest.products] == [first[2].id, late.id]


async def test_page_size_defaults_to_20_and_is_capped_at_100(
    deps: Dependencies, admin: Principal
) -> None:
    for i in range(101):
        await _create(deps, admin, sku=f"SKU-{i}")
    assert len((await services.list_products(deps=deps, page_size=0, page_token="")).products) == 20
    capped = await services.list_products(deps=deps, page_size=500, page_token="")
    assert len(capped.products) == 100
    assert capped.next_page_token


@pytest.mark.parametrize(
    ("page_size", "page_token", "field"),
    [
        (-1, "", "page_size"),
        (10, "garbage", "page_token"),
        (10, "x" * 1_000_000, "page_token"),
        (10, encode_page_token({"after": "not-an-id"}), "page_token"),
        (10, encode_page_token({"id": fixed_id(1)}), "page_token"),
    ],
)
async def test_bad_list_requests_are_invalid(
    deps: Dependencies, page_size: int, page_token: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await services.list_products(deps=deps, page_size=page_size, page_token=page_token)
    assert _fields(error) == [field]


async def _update(
    deps: Dependencies, caller: Principal, product_id: str, mask: list[str], **fields: Any
) -> Product:
    values: dict[str, Any] = {
        "sku": "",
        "name": "",
        "description": "",
        "price_cents": 0,
        "stock": 0,
        **fields,
    }
    return await services.update_product(
        deps=deps, caller=caller, product_id=product_id, update_mask=mask, **values
    )


async def test_update_changes_only_the_masked_fields(
    deps: Dependencies, admin: Principal, clock: FakeClock
) -> None:
    product = await _create(deps, admin)
    clock.advance(60)
    # The unmasked fields carry empty and even invalid values: they are ignored.
    updated = await _update(
        deps,
        admin,
        product.id,
        ["name", "price_cents"],
        name="Big mug",
        price_cents=1599,
        sku="bad sku",
        stock=-3,
    )
    assert (updated.sku, updated.name, updated.description) == ("MUG-1", "Big mug", "A mug.")
    assert (updated.price_cents, updated.stock) == (1599, 5)
    assert updated.update_time == clock.now != updated.create_time
    assert await services.get_product(deps=deps, product_id=product.id) == updated


async def test_update_can_set_every_updatable_field(deps: Dependencies, admin: Principal) -> None:
    product = await _create(deps, admin)
    mask = ["sku", "name", "description", "price_cents", "stock"]
    values = {"sku": "MUG-2", "name": "Cup", "description": "", "price_cents": 1, "stock": 0}
    updated = await _update(deps, admin, product.id, mask, **values)
    assert (updated.sku, updated.name, updated.description, updated.price_cents, updated.stock) == (
        "MUG-2",
        "Cup",
        "",
        1,
        0,
    )


@pytest.mark.parametrize(
    ("mask", "fields", "expected"),
    [
        ([], {}, ["update_mask"]),
        (["id"], {}, ["update_mask"]),
        (["create_time"], {}, ["update_mask"]),
        (["name", "x" * 100_000], {"name": "ok"}, ["update_mask"]),
        (["name"], {"name": ""}, ["name"]),
        (["price_cents"], {"price_cents": -1}, ["price_cents"]),
        (["sku", "stock"], {"sku": "a b", "stock": 2_000_000}, ["sku", "stock"]),
    ],
)
async def test_bad_updates_are_invalid(
    deps: Dependencies,
    admin: Principal,
    mask: list[str],
    fields: dict[str, Any],
    expected: list[str],
) -> None:
    product = await _create(deps, admin)
    with pytest.raises(InvalidArgument) as error:
        await _update(deps, admin, product.id, mask, **fields)
    assert _fields(error) == expected


async def test_update_of_a_malformed_or_unknown_id(deps: Dependencies, admin: Principal) -> None:
    with pytest.raises(InvalidArgument) as error:
        await _update(deps, admin, "nope", ["name"], name="x")
    assert _fields(error) == ["id"]
    with pytest.raises(NotFound):
        await _update(deps, admin, new_id(), ["name"], name="x")


async def test_a_customer_may_not_update(
    deps: Dependencies, admin: Principal, customer: Principal
) -> None:
    product = await _create(deps, admin)
    with pytest.raises(PermissionDenied):
        await _update(deps, customer, product.id, ["name"], name="Mine now")


async def test_update_to_a_taken_sku_already_exists(deps: Dependencies, admin: Principal) -> None:
    await _create(deps, admin, sku="TAKEN")
    product = await _create(deps, admin, sku="FREE")
    with pytest.raises(AlreadyExists):
        await _update(deps, admin, product.id, ["sku"], sku="TAKEN")


async def test_batch_get_returns_the_existing_ones_in_request_order(
    deps: Dependencies, admin: Principal
) -> None:
    a, b, c = [await _create(deps, admin, sku=f"SKU-{i}") for i in range(3)]
    found = await services.batch_get_products(deps=deps, product_ids=[c.id, new_id(), a.id, b.id])
    assert found == [c, a, b]


@pytest.mark.parametrize(
    ("ids", "expected"),
    [
        ([], ["ids"]),
        ([new_id() for _ in range(101)], ["ids"]),
        ([new_id(), "bad", new_id(), ""], ["ids[1]", "ids[3]"]),
    ],
)
async def test_bad_batch_gets_are_invalid(
    deps: Dependencies, ids: list[str], expected: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as error:
        await services.batch_get_products(deps=deps, product_ids=ids)
    assert _fields(error) == expected


async def test_batch_get_accepts_100_ids(deps: Dependencies) -> None:
    assert (
        await services.batch_get_products(deps=deps, product_ids=[new_id() for _ in range(100)])
        == []
    )


async def test_demo_products_are_seeded_once_into_an_empty_catalogue(
    deps: Dependencies, database: FakeDatabase
) -> None:
    assert await seed_demo_products(deps=deps) == len(DEMO_PRODUCTS) >= 8
    assert await seed_demo_products(deps=deps) == 0
    assert len(database.committed.products) == len(DEMO_PRODUCTS)


async def test_no_demo_products_join_an_existing_catalogue(
    deps: Dependencies, admin: Principal, database: FakeDatabase
) -> None:
    await _create(deps, admin)
    assert await seed_demo_products(deps=deps) == 0
    assert len(database.committed.products) == 1


def test_demo_products_pass_the_validation_an_admin_gets() -> None:
    for fields in DEMO_PRODUCTS:
        validator = Validator()
        services.check_product_fields(
            validator,
            sku=fields.sku,
            name=fields.name,
            description=fields.description,
            price_cents=fields.price_cents,
            stock=fields.stock,
        )
        assert validator.violations == [], fields.sku
