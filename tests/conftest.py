"""The running system for end-to-end and contract tests: one stack per test session."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import User, login, register
from sinks import SmtpSink
from tienda_devstack.otlp_receiver import OtlpReceiver
from tienda_devstack.stack import Ports, Stack
from tienda_platform.testing import (
    create_postgres_database,
    drop_postgres_database,
    postgres_server_url,
)


@pytest.fixture(scope="session")
def otlp_receiver() -> Iterator[OtlpReceiver]:
    receiver = OtlpReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink().start()
    yield sink
    sink.stop()


@pytest.fixture(scope="session", params=["orchestration", "choreography"])
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    otlp_receiver: OtlpReceiver,
    smtp_sink: SmtpSink,
) -> Iterator[Stack]:
    """tienda on free loopback ports with its own data folder, exporting traces to a real OTLP
    receiver, in each saga mode in turn (every end-to-end test runs in both)."""
    data_dir: Path = tmp_path_factory.mktemp(f"tienda-e2e-{request.param}")
    env = {
        "TIENDA_ENV": "test",
        "PAYMENT_TIMEOUT_SECONDS": "1",
        "SHUTDOWN_GRACE_SECONDS": "2",
        "WEBHOOK_ALLOW_PRIVATE": "true",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "ORDER_SAGA_MODE": request.param,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(smtp_sink.port),
    }
    with Stack(data_dir=data_dir, ports=Ports.free(), env=env) as running:
        yield running


@contextlib.contextmanager
def on_postgresql(
    tmp_path: Path, saga_mode: str, replicas: dict[str, int] | None = None
) -> Iterator[Stack]:
    """tienda on fresh PostgreSQL databases (one per service, on the server of
    TIENDA_TEST_POSTGRES_URL), in a saga mode, with `replicas` of its services; the
    databases are dropped after."""
    server = postgres_server_url()
    if server is None:
        pytest.skip("TIENDA_TEST_POSTGRES_URL is not set; .ci/run sets it")
    databases = {
        f"{service}_DATABASE_URL": asyncio.run(create_postgres_database(server))
        for service in ("AUTH", "PRODUCT", "ORDER")
    }
    env = databases | {
        "TIENDA_ENV": "test",
        "PAYMENT_TIMEOUT_SECONDS": "1",
        "ORDER_SAGA_MODE": saga_mode,
    }
    try:
        with Stack(
            data_dir=tmp_path, ports=Ports.free(), env=env, replicas=replicas or {}
        ) as stack:
            yield stack
    finally:
        for url in databases.values():
            asyncio.run(drop_postgres_database(url))


@pytest.fixture(params=["orchestration", "choreography"])
def postgres_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """tienda on PostgreSQL, in each saga mode in turn; for the tests that do to it what the
    session's stack must not suffer, or that are about PostgreSQL."""
    with on_postgresql(tmp_path, request.param) as stack:
        yield stack


@pytest.fixture(params=["orchestration", "choreography"])
def replicated_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    """tienda on PostgreSQL with two replicas of each gRPC service, in each saga mode."""
    replicas = {"auth_service": 2, "product_service": 2, "order_service": 2}
    with on_postgresql(tmp_path, request.param, replicas) as stack:
        yield stack


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.gateway_url, timeout=15.0) as client:
        yield client


@pytest.fixture(scope="session")
def admin(api: httpx.Client, stack: Stack) -> User:
    token, refresh = login(api, stack.admin.email, stack.admin.password)
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    return User(claims["sub"], stack.admin.email, stack.admin.password, token, refresh)


@pytest.fixture
def customer(api: httpx.Client) -> User:
    return register(api)


@pytest.fixture
def other_customer(api: httpx.Client) -> User:
    return register(api, "Grace Other")
