"""OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf: the services export their spans over OTLP/HTTP
(a collector's port 4318) to a real receiver, with the headers and compression the standard
variables ask for, and an order is still one trace across them."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import User, create_product, eventually, login, place_order, register
from tienda_devstack.otlp_receiver import OtlpHttpReceiver
from tienda_devstack.stack import Ports, Stack

pytestmark = pytest.mark.e2e

SERVICES = {"gateway", "auth_service", "product_service", "order_service"}


@pytest.fixture
def receiver() -> Iterator[OtlpHttpReceiver]:
    receiver = OtlpHttpReceiver().start()
    yield receiver
    receiver.stop()


def test_spans_go_over_otlp_http_with_the_standard_variables(
    receiver: OtlpHttpReceiver, tmp_path: Path
) -> None:
    env = {
        "TIENDA_ENV": "test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=shop,authorization=Bearer%20collector-key",
        "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with (
        Stack(data_dir=tmp_path, ports=Ports.free(), env=env) as stack,
        httpx.Client(base_url=stack.gateway_url, timeout=15.0) as api,
    ):
        token, refresh = login(api, stack.admin.email, stack.admin.password)
        claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
        admin = User(claims["sub"], stack.admin.email, stack.admin.password, token, refresh)
        customer = register(api)
        product = create_product(api, admin, stock=2)
        order = place_order(api, customer, product["id"], 1)

        def order_trace() -> set[str]:
            """The services with spans in the trace of the order's spans."""
            exports = receiver.received()
            spans = [span for export in exports for span in export.spans]
            traces = {s.trace_id for s in spans if s.attributes.get("order.id") == order["id"]}
            return {s.service for s in spans if s.trace_id in traces}

        eventually(lambda: {"gateway", "order_service", "product_service"} <= order_trace(), 30)
    exports = receiver.received()
    assert {r["service.name"] for export in exports for r in export.resources} == SERVICES
    for export in exports:
        assert export.path == "/v1/traces"
        assert export.headers["content-type"] == "application/x-protobuf"
        assert export.headers["content-encoding"] == "gzip"
        assert export.headers["x-tenant"] == "shop"
        assert export.headers["authorization"] == "Bearer collector-key"
