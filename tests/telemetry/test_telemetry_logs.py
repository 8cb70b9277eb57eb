"""Every log line of the end-to-end run is ECS JSON, request lines carry their trace, an error
line the trace of the request that caused it, and no secret was written (after every path that
handles one ran: the end-to-end tests of the same stack add theirs when they ran before)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import eventually
from tienda_devstack.otlp_receiver import OtlpReceiver
from tienda_devstack.stack import SERVICES, Ports, Stack

from .exercise import Exercised, log_documents, log_lines, new_traceparent

pytestmark = pytest.mark.e2e

SERVER, STATUS_ERROR = 2, 2

REQUIRED = (
    "@timestamp",
    "log.level",
    "message",
    "service.name",
    "service.version",
    "event.dataset",
)


def test_logs_are_ecs_json_with_trace_ids_and_no_secrets(
    stack: Stack, exercised: Exercised
) -> None:
    lines = 0
    for service in SERVICES:
        for raw in log_lines(stack, service):
            lines += 1
            leaked = exercised.secret_in(raw)
            assert leaked is None, f"{service} logged a secret: {leaked}"
            doc = json.loads(raw)
            missing = [f for f in REQUIRED if f not in doc]
            assert not missing, (service, missing, raw[:300])
            assert doc["service.name"] == service
            if doc["log.level"] == "error":
                assert "error.type" in doc or "tienda.correlation_id" in doc, raw[:300]
            # one line per API request, inside its trace (probes and /metrics are not traced)
            if str(doc.get("http.route", "")).startswith("/v1/"):
                assert len(doc.get("trace.id", "")) == 32, raw[:300]
                assert len(doc.get("span.id", "")) == 16, raw[:300]
    assert lines > 50
    # the run above is among the lines read
    assert any(
        doc.get("user.id") == exercised.customer.id for doc in log_documents(stack, "auth_service")
    )


@pytest.fixture
def stack_of_its_own(tmp_path: Path, otlp_receiver: OtlpReceiver) -> Iterator[Stack]:
    """A stack that a test may break."""
    env = {
        "TIENDA_ENV": "test",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    with Stack(data_dir=tmp_path, ports=Ports.free(), env=env) as stack:
        yield stack


def test_error_lines_carry_the_trace_of_the_request_that_caused_them(
    stack_of_its_own: Stack, otlp_receiver: OtlpReceiver
) -> None:
    stack = stack_of_its_own
    with httpx.Client(base_url=stack.gateway_url, timeout=15.0) as api:
        products = api.get("/v1/products").json()["products"]  # the demo catalogue
        # a healthy tienda answers no request with an error line: its products table gone,
        # product_service fails on a read, and the gateway on its answer
        with closing(sqlite3.connect(stack.data_dir / "product.db")) as db:
            db.execute("ALTER TABLE products RENAME TO products_gone")
        traceparent, trace_id = new_traceparent()
        response = api.get(
            f"/v1/products/{products[0]['id']}", headers={"traceparent": traceparent}
        )
    assert response.status_code == 500, response.text

    def error_line(service: str, correlation_id: str) -> dict[str, Any] | None:
        return next(
            (
                doc
                for doc in log_documents(stack, service)
                if doc["log.level"] == "error"
                and doc.get("tienda.correlation_id") == correlation_id
            ),
            None,
        )

    gateway = eventually(lambda: error_line("gateway", response.headers["X-Correlation-Id"]))
    assert gateway.get("trace.id") == trace_id, gateway
    # the gateway's line quotes the correlation id of product_service's answer
    upstream = re.search(r"correlation id ([\w-]+)", gateway["message"])
    assert upstream, gateway
    service = eventually(lambda: error_line("product_service", upstream[1]))
    assert service.get("trace.id") == trace_id, service
    assert service["error.type"] == "OperationalError", service
    # and the trace the lines name was recorded, its failed step marked
    otlp_receiver.wait_for(
        lambda spans: any(
            s.trace_id == trace_id
            and s.service == "product_service"
            and s.kind == SERVER
            and s.status_code == STATUS_ERROR
            for s in spans
        )
    )


def test_the_grpc_services_run_on_uvloop(stack: Stack) -> None:
    """The services' event loop is uvloop's (tienda_platform.runtime.run), as the gateway's."""
    grpc_services = ("auth_service", "product_service", "order_service")
    loops = {}
    for service in grpc_services:
        for raw in stack.log_path(service).read_text().splitlines():
            doc = json.loads(raw)
            if str(doc["message"]).startswith("serving "):
                loops[service] = doc.get("labels.event_loop")
    assert loops == dict.fromkeys(grpc_services, "uvloop")
