"""The running system for end-to-end and contract tests: one stack per test session."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2e_support import User, login, register
from sinks import SmtpSink
from tienda_devstack.otlp_receiver import OtlpReceiver
from tienda_devstack.stack import Ports, Stack


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
