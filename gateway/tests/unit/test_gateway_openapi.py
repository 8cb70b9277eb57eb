"""The OpenAPI document generated from the contracts' http rules and comments."""

from __future__ import annotations

from typing import Any

import pytest
import tienda_contracts
from gateway.openapi import PUBLIC_RPCS, build_document
from gateway.rules import contract_services, http_bindings
from google.api import annotations_pb2
from tienda_platform.proto_schemas import Comments

from gateway import composition

from .things import thing_service

pytestmark = pytest.mark.unit

VERBS = ("get", "put", "post", "delete", "patch")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build_document(
        http_bindings(contract_services()),
        Comments(tienda_contracts.descriptor_set()),
        extra_paths=[(composition.PATH, "get", composition.describe)],
    )


def operations(document: dict[str, Any]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    return {
        op["operationId"]: (verb, path, op)
        for path, item in document["paths"].items()
        for verb, op in item.items()
    }


def annotated_rpcs() -> list[tuple[str, str, str]]:
    found = []
    for service in contract_services():
        for method in service.methods:
            rule = method.GetOptions().Extensions[annotations_pb2.http]
            verb = rule.WhichOneof("pattern")
            if verb is not None:
                found.append((method.name, verb, getattr(rule, verb)))
    return found


def test_every_annotated_rpc_has_its_method_and_path(document: dict[str, Any]) -> None:
    ops = operations(document)
    rpcs = annotated_rpcs()
    assert len(rpcs) >= 15
    for name, verb, path in rpcs:
        assert ops[name][:2] == (verb, path), name
    assert document["openapi"] == "3.1.0"


def test_internal_rpcs_have_no_operation(document: dict[str, Any]) -> None:
    ops = operations(document)
    for internal in ("BatchGetProducts", "ReserveStock", "GetUser", "CommitReservation"):
        assert internal not in ops


def test_required_and_output_only_fields(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    product = schemas["product.v1.Product"]
    assert set(product["required"]) == {"sku", "name", "price_cents"}
    assert product["properties"]["create_time"]["readOnly"] is True
    assert "readOnly" not in product["properties"]["name"]
    order = schemas["order.v1.Order"]
    assert order["properties"]["total_cents"]["readOnly"] is True
    assert set(schemas["auth.v1.RegisterRequest"]["required"]) == {
        "email",
        "password",
        "full_name",
    }


def test_types_follow_the_proto3_json_mapping(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    product = schemas["product.v1.Product"]["properties"]
    assert product["price_cents"] == {"type": "string", "format": "int64"}
    assert product["stock"] == {"type": "integer", "format": "int32"}
    assert product["create_time"]["format"] == "date-time"
    assert schemas["order.v1.OrderStatus"]["type"] == "string"
    assert "ORDER_STATUS_CONFIRMED" in schemas["order.v1.OrderStatus"]["enum"]
    assert schemas["google.protobuf.Empty"]["type"] == "object"


def test_descriptions_come_from_proto_comments(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert schemas["product.v1.Product"]["description"] == "A product of the catalogue."
    assert "unique" in schemas["product.v1.Product"]["properties"]["sku"]["description"]
    assert "Terminal: not enough stock" in schemas["order.v1.OrderStatus"]["description"]
    _, _, get_product = operations(document)["GetProduct"]
    assert get_product["description"].startswith("GetProduct returns one product")


def test_parameters_and_bodies(document: dict[str, Any]) -> None:
    ops = operations(document)
    _, _, listing = ops["ListProducts"]
    assert {(p["name"], p["in"]) for p in listing["parameters"]} == {
        ("page_size", "query"),
        ("page_token", "query"),
    }
    _, _, update = ops["UpdateProduct"]
    assert {(p["name"], p["in"]) for p in update["parameters"]} == {
        ("product.id", "path"),
        ("update_mask", "query"),
        ("If-Match", "header"),
    }
    body = update["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"] == "#/components/schemas/product.v1.Product"
    _, _, create_order = ops["CreateOrder"]
    # the one request with a request_id (AIP-155) takes an Idempotency-Key header for it
    assert [(p["name"], p["in"]) for p in create_order["parameters"]] == [
        ("Idempotency-Key", "header")
    ]
    assert not any(
        p["name"] == "Idempotency-Key"
        for name, (_, _, op) in ops.items()
        if name != "CreateOrder"
        for p in op.get("parameters", [])
    )
    assert create_order["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/order.v1.CreateOrderRequest"
    }
    _, _, cancel = ops["CancelOrder"]
    cancel_body = cancel["requestBody"]["content"]["application/json"]["schema"]
    assert cancel_body["properties"] == {}
    assert cancel["requestBody"]["required"] is False
    assert create_order["requestBody"]["required"] is True


def test_security_is_required_except_on_public_routes(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document["security"] == [{"bearerAuth": []}]
    ops = operations(document)
    public = {name.rsplit(".", 1)[1] for name in PUBLIC_RPCS}
    assert public == {"Register", "Login", "RefreshToken", "GetJwks", "GetProduct", "ListProducts"}
    for name, (_, _, op) in ops.items():
        if name in public:
            assert op["security"] == [], name
        else:
            assert op.get("security", document["security"]) == [{"bearerAuth": []}], name


def test_errors_and_the_details_route(document: dict[str, Any]) -> None:
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message", "details"}
    verb, path, details = operations(document)["GetOrderDetails"]
    assert (verb, path) == ("get", "/v1/orders/{id}/details")
    schema = details["responses"]["200"]["content"]["application/json"]["schema"]
    assert set(schema["properties"]) == {"order", "products", "customer", "degraded"}


@pytest.fixture(scope="module")
def things_document() -> dict[str, Any]:
    return build_document(
        http_bindings([thing_service()]), Comments(tienda_contracts.descriptor_set())
    )


def test_synthetic_rules_of_every_kind(things_document: dict[str, Any]) -> None:
    paths = things_document["paths"]
    assert "/v1/things:search" not in paths  # a custom HTTP method has no OpenAPI form
    assert paths["/v1/{shelf.name}/things/{id}"]["get"]["operationId"] == "GetThing"
    assert paths["/v1/shelves/{shelf.name}/things"]["get"]["operationId"] == "ListThings2"
    names = {p["name"] for p in paths["/v1/things"]["get"]["parameters"]}
    assert {"flag", "tags", "shelf.name", "shelf.size", "when", "count", "update_mask"} <= names
    assert "shelves" not in names  # repeated messages cannot be query parameters
    thing = things_document["components"]["schemas"]["gwtest.v1.Thing"]
    assert thing["required"] == ["id"]
    assert thing["properties"]["created"]["readOnly"] is True


def test_the_documents_are_valid_openapi(
    document: dict[str, Any], things_document: dict[str, Any]
) -> None:
    import openapi_spec_validator

    openapi_spec_validator.validate(document)
    openapi_spec_validator.validate(things_document)


def test_conditional_requests_are_documented_where_the_resource_has_an_etag(
    document: dict[str, Any],
) -> None:
    ops = operations(document)
    _, _, get_product = ops["GetProduct"]
    assert {p["name"] for p in get_product["parameters"] if p["in"] == "header"} == {
        "If-Match",
        "If-None-Match",
    }
    assert set(get_product["responses"]) == {"200", "304", "412", "default"}
    assert "ETag" in get_product["responses"]["200"]["headers"]
    _, _, update = ops["UpdateProduct"]
    assert "412" in update["responses"]
    _, _, get_order = ops["GetOrder"]  # orders have no etag
    assert "headers" not in get_order["responses"]["200"]
    assert not [p for p in get_order.get("parameters", []) if p["in"] == "header"]
