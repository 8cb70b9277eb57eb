"""Routes come from the google.api.http rules only; settings come from the environment."""

from __future__ import annotations

import pytest
from gateway.app import create_app
from gateway.config import Settings
from gateway.rules import contract_services, http_bindings
from google.api import annotations_pb2

from .things import thing_service

pytestmark = pytest.mark.unit


def test_every_kind_of_rule_becomes_a_binding() -> None:
    found = [
        (b.rpc.name, b.http_method, b.template.source, b.body)
        for b in http_bindings([thing_service()])
    ]
    assert found == [
        ("GetThing", "GET", "/v1/{shelf.name=shelves/*}/things/{id}", ""),
        ("ListThings", "GET", "/v1/things", ""),
        ("ListThings", "GET", "/v1/shelves/{shelf.name}/things", ""),  # additional binding
        ("CreateThing", "POST", "/v1/things", "*"),
        ("GetFile", "GET", "/v1/files/{id=**}", ""),
        ("ArchiveThing", "POST", "/v1/things/{id}:archive", "*"),
        ("UpdateThing", "PATCH", "/v1/things/{thing.id}", "thing"),
        ("Search", "SEARCH", "/v1/things:search", ""),  # custom pattern
    ]  # Internal has no rule, so no binding


def test_the_app_routes_every_rule_and_only_the_hand_written_extras() -> None:
    table = create_app(settings=Settings()).state.routes
    bindings = http_bindings(contract_services())
    by_hand = {
        ("GET", "/v1/orders/{id}/details"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
        ("GET", "/asyncapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/{asset}"),
    }
    routes = {(r.method, r.label) for r in table.routes}
    assert routes == {(b.http_method, b.template.source) for b in bindings} | by_hand
    internal = [
        m.name
        for s in contract_services()
        for m in s.methods
        if not m.GetOptions().HasExtension(annotations_pb2.http)
    ]
    assert "BatchGetProducts" in internal and "GetUser" in internal


def test_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "GATEWAY_PORT",
        "GATEWAY_MAX_BODY_BYTES",
        "GATEWAY_MAX_HEADER_BYTES",
        "GATEWAY_READ_TIMEOUT_SECONDS",
        "UPSTREAM_TIMEOUT_SECONDS",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PRODUCT_GRPC_TARGET", raising=False)
    defaults = Settings()
    assert (defaults.gateway_port, defaults.gateway_max_body_bytes) == (8080, 1024 * 1024)
    assert defaults.gateway_max_header_bytes == 32 * 1024
    assert defaults.gateway_read_timeout_seconds == 15
    assert defaults.upstream_timeout_seconds == 10
    assert defaults.upstream_targets()["product.v1"] == "127.0.0.1:50052"
    monkeypatch.setenv("GATEWAY_PORT", "9999")
    monkeypatch.setenv("ORDER_GRPC_TARGET", "orders:1")
    monkeypatch.setenv("UPSTREAM_TIMEOUT_SECONDS", "2.5")
    configured = Settings()
    assert configured.gateway_port == 9999
    assert configured.upstream_targets()["order.v1"] == "orders:1"
    assert configured.upstream_timeout_seconds == 2.5
