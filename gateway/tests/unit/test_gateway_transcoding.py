"""Building request messages from path variables, query strings and JSON bodies."""

from __future__ import annotations

import json

import grpc
import pytest
from gateway.errors import ApiError
from gateway.rules import HttpBinding, contract_services, http_bindings
from gateway.transcoding import RequestBuilder, decode_json, response_json
from order.v1 import order_pb2
from product.v1 import product_pb2

from .things import thing_service

pytestmark = pytest.mark.unit

CONTRACT = {b.full_rpc_name: b for b in http_bindings(contract_services())}
THINGS = http_bindings([thing_service()])


def builder(rpc: str) -> RequestBuilder:
    return RequestBuilder(CONTRACT[rpc])


def thing_builder(rpc: str, path: str | None = None) -> RequestBuilder:
    binding: HttpBinding = next(
        b for b in THINGS if b.rpc.name == rpc and path in (None, b.template.source)
    )
    return RequestBuilder(binding)


def refused(build: RequestBuilder, **parts: object) -> str:
    with pytest.raises(ApiError) as caught:
        build.build(**parts)  # type: ignore[arg-type]
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.http_status == 400
    return caught.value.message


def test_path_variable_sets_the_field() -> None:
    request = builder("product.v1.ProductService.GetProduct").build(path_params={"id": "p-1"})
    assert request == product_pb2.GetProductRequest(id="p-1")


def test_query_parameters_in_snake_and_camel_case() -> None:
    build = builder("product.v1.ProductService.ListProducts")
    request = build.build(path_params={}, query=[("page_size", "5"), ("pageToken", "abc")])
    assert request == product_pb2.ListProductsRequest(page_size=5, page_token="abc")


def test_body_field_with_nested_path_variable() -> None:
    request = builder("product.v1.ProductService.CreateProduct").build(
        path_params={}, body=b'{"sku": "S-1", "name": "Mug", "priceCents": "1200", "stock": 3}'
    )
    assert request.product == product_pb2.Product(sku="S-1", name="Mug", price_cents=1200, stock=3)


def test_update_mask_is_derived_from_the_top_level_body_fields() -> None:
    build = builder("product.v1.ProductService.UpdateProduct")
    request = build.build(
        path_params={"product.id": "p-1"}, body=b'{"name": "New", "priceCents": 99}'
    )
    assert request.product == product_pb2.Product(id="p-1", name="New", price_cents=99)
    assert list(request.update_mask.paths) == ["name", "price_cents"]


def test_a_body_bound_to_a_field_names_the_fields_inside_it() -> None:
    build = builder("product.v1.ProductService.UpdateProduct")
    for body, complaint in [
        (b'{"price_cents": "abc"}', "invalid request body: field price_cents takes an integer"),
        (b'{"stock": true}', "invalid request body: field stock takes an integer"),
        (b'{"nope": 1}', 'invalid request body: unknown field "nope"'),
    ]:
        assert refused(build, path_params={"product.id": "p-1"}, body=body) == complaint


def test_update_mask_from_the_query_string_wins() -> None:
    build = builder("product.v1.ProductService.UpdateProduct")
    request = build.build(
        path_params={"product.id": "p-1"},
        query=[("update_mask", "name,priceCents")],
        body=b'{"name": "New", "stock": 4}',
    )
    assert list(request.update_mask.paths) == ["name", "price_cents"]


def test_path_variables_overwrite_the_body() -> None:
    request = builder("product.v1.ProductService.UpdateProduct").build(
        path_params={"product.id": "from-path"}, body=b'{"id": "from-body", "name": "x"}'
    )
    assert request.product.id == "from-path"


def test_body_star_with_a_custom_verb_and_an_empty_body() -> None:
    build = builder("order.v1.OrderService.CancelOrder")
    assert build.build(path_params={"id": "o-1"}) == order_pb2.CancelOrderRequest(id="o-1")


def test_body_star_ignores_the_query_string() -> None:
    build = builder("order.v1.OrderService.CreateOrder")
    request = build.build(
        path_params={},
        query=[("payment_token", "tok_declined")],
        body=b'{"items": [{"productId": "p-1", "quantity": 2}], "payment_token": "tok_ok"}',
    )
    assert request.payment_token == "tok_ok"
    assert request.items[0] == order_pb2.OrderItemRequest(product_id="p-1", quantity=2)


def test_query_parameters_of_every_kind() -> None:
    request = thing_builder("ListThings", "/v1/things").build(
        path_params={},
        query=[
            ("flag", "true"),
            ("color", "COLOR_RED"),
            ("data", "aGk"),
            ("tags", "a"),
            ("tags", "b"),
            ("shelf.name", "s1"),
            ("shelf.size", "-7"),
            ("when", "2024-01-01T00:00:00Z"),
            ("count", "3"),
            ("ratio", "1.5"),
        ],
    )
    assert request.flag is True
    assert request.color == 1
    assert request.data == b"hi"
    assert list(request.tags) == ["a", "b"]
    assert (request.shelf.name, request.shelf.size) == ("s1", -7)
    assert request.when.seconds == 1704067200
    assert request.count.value == 3
    assert request.ratio == 1.5


def test_multi_segment_path_variable() -> None:
    request = thing_builder("GetThing").build(path_params={"shelf.name": "shelves/1", "id": "t"})
    assert (request.shelf.name, request.id) == ("shelves/1", "t")


def test_query_parameters_naming_path_fields_are_ignored() -> None:
    request = thing_builder("ListThings", "/v1/shelves/{shelf.name}/things").build(
        path_params={"shelf.name": "from-path"}, query=[("shelf.name", "from-query")]
    )
    assert request.shelf.name == "from-path"


def test_update_mask_present_but_empty_in_the_query_is_kept_empty() -> None:
    request = thing_builder("UpdateThing").build(
        path_params={"thing.id": "t"}, query=[("update_mask", "")], body=b'{"flag": true}'
    )
    assert request.HasField("update_mask") and list(request.update_mask.paths) == []


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ([("nope", "1")], "unknown query parameter"),
        ([("small", "many")], "invalid value for small"),
        ([("small", "99999999999")], "invalid value for small"),
        ([("small", "1"), ("small", "2")], "single value"),
        ([("flag", "maybe")], "invalid value for flag"),
        ([("color", "COLOR_BLUE")], "invalid value for color"),
        ([("when", "yesterday")], "invalid value for when"),
        ([("shelves", "x")], "invalid value for shelves"),
        ([("shelf", "x")], "invalid value for shelf"),
    ],
)
def test_bad_query_parameters_are_a_400(query: list[tuple[str, str]], complaint: str) -> None:
    message = refused(thing_builder("ListThings", "/v1/things"), path_params={}, query=query)
    assert complaint in message


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b'{"items": [', "not valid JSON"),
        (b"\xff\xfe{", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'"text"', "must be a JSON object"),
        (
            b'{"items": [{"product_id": "p", "quantity": "many"}]}',
            "invalid request body: field items.quantity takes an integer",
        ),
        (b'{"items": 5}', "invalid request body: field items takes a list, each an object"),
        (b'{"items": [5]}', "invalid request body: field items takes a list, each an object"),
        (b'{"admin": true}', 'invalid request body: unknown field "admin"'),
        (
            b'{"items": [{"quantity": 99999999999}]}',
            "invalid request body: field items.quantity takes an integer in range",
        ),
        (b'{"items": [{"quantity": {}}]}', "field items.quantity takes an integer"),
        (b'{"items": [{"product_id": 5}]}', "field items.product_id takes a string"),
        (b'{"payment_token": 1.5}', "field payment_token takes a string"),
        (b"[" * 100_000 + b"]" * 100_000, "request body"),
    ],
)
def test_bad_bodies_are_a_400(body: bytes, complaint: str) -> None:
    message = refused(builder("order.v1.OrderService.CreateOrder"), path_params={}, body=body)
    assert complaint in message
    # the API's terms only: not Python's exception texts, type names or the parser's own
    for internal in ("int()", "literal", "NoneType", "bytes-like", "iterable", "at Create"):
        assert internal not in message


def test_a_huge_value_is_never_echoed() -> None:
    huge = "x" * 1_000_000
    body = json.dumps({"items": [{"product_id": "p", "quantity": huge}]}).encode()
    message = refused(builder("order.v1.OrderService.CreateOrder"), path_params={}, body=body)
    assert len(message) <= 300
    assert "x" * 100 not in message


def test_responses_use_proto_names_strings_for_int64_and_print_defaults() -> None:
    product = product_pb2.Product(id="p", price_cents=1200)
    document = response_json(product)
    assert document["price_cents"] == "1200"
    assert document["stock"] == 0
    assert document["description"] == ""
    assert "priceCents" not in document


@pytest.mark.parametrize(
    "body",
    [b'{"\\ud800": null}', b'{"items": "\\udfff"}', b'["\\ud83d"]', b'{"a": "\xed\xa0\x80"}'],
    ids=["in a name", "in a value", "a high one alone", "as raw bytes"],
)
def test_json_with_a_lone_surrogate_is_a_400(body: bytes) -> None:
    with pytest.raises(ApiError) as caught:
        decode_json(body)
    assert caught.value.http_status == 400


def test_json_with_a_surrogate_pair_is_a_character() -> None:
    assert decode_json(b'{"name": "\\ud83d\\ude00"}') == {"name": "\U0001f600"}
