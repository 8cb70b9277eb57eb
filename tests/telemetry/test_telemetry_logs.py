"""Every log line of the end-to-end run is ECS JSON, request lines carry their trace, and no
secret was written. Runs after the end-to-end tests of the same stack."""

from __future__ import annotations

import json

import pytest
from tienda_devstack.stack import SERVICES, Stack

pytestmark = pytest.mark.e2e

REQUIRED = (
    "@timestamp",
    "log.level",
    "message",
    "service.name",
    "service.version",
    "event.dataset",
)


def test_logs_are_ecs_json_with_trace_ids_and_no_secrets(stack: Stack) -> None:
    secrets = [
        stack.admin.password,
        stack.service_secret,
        "tok_ok",
        "tok_declined",
        "tok_timeout",
        "correct-horse-9",
        "Bearer ey",
        "rt_",
        "whsec_",
    ]
    lines = 0
    for service in SERVICES:
        for raw in stack.log_path(service).read_text().splitlines():
            lines += 1
            for secret in secrets:
                assert secret not in raw, f"{service} logged a secret: {raw[:300]}"
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
