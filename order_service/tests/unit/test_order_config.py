"""order_service's settings: defaults and the environment variables that change them."""

from __future__ import annotations

from pathlib import Path

import pytest
from order_service.config import Settings
from pydantic import ValidationError

pytestmark = pytest.mark.unit

VARIABLES = (
    "ORDER_DATABASE_URL",
    "ORDER_GRPC_PORT",
    "ORDER_METRICS_PORT",
    "PRODUCT_GRPC_TARGET",
    "PAYMENT_TIMEOUT_SECONDS",
    "PRODUCT_RPC_TIMEOUT_SECONDS",
    "TIENDA_DATA_DIR",
    "TIENDA_ENV",
    "ORDER_SAGA_MODE",
    "SERVICE_CLIENT_SECRET",
    "SAGA_LEASE_SECONDS",
    "SAGA_POLL_SECONDS",
    "SAGA_MAX_BACKOFF_SECONDS",
    "WEBHOOK_ALLOW_PRIVATE",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIENDA_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'order.db'}"
    assert (settings.grpc_port, settings.metrics_port) == (50053, 9103)
    assert settings.product_grpc_target == "127.0.0.1:50052"
    assert (settings.payment_timeout_seconds, settings.product_rpc_timeout_seconds) == (2.0, 3.0)
    assert settings.saga_mode == "orchestration"
    assert settings.service_client_secret.get_secret_value() == ""
    assert (
        settings.saga_lease_seconds,
        settings.saga_poll_seconds,
        settings.saga_max_backoff_seconds,
    ) == (15.0, 0.5, 30.0)


def test_the_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORDER_DATABASE_URL", "postgresql+asyncpg://db/orders")
    monkeypatch.setenv("ORDER_GRPC_PORT", "6000")
    monkeypatch.setenv("ORDER_METRICS_PORT", "0")
    monkeypatch.setenv("PRODUCT_GRPC_TARGET", "products:50052")
    monkeypatch.setenv("PAYMENT_TIMEOUT_SECONDS", "0.5")
    monkeypatch.setenv("PRODUCT_RPC_TIMEOUT_SECONDS", "1.5")
    monkeypatch.setenv("ORDER_SAGA_MODE", "choreography")
    monkeypatch.setenv("SERVICE_CLIENT_SECRET", "s3cret")
    monkeypatch.setenv("SAGA_LEASE_SECONDS", "3")
    settings = Settings()
    assert settings.saga_mode == "choreography"
    assert settings.service_client_secret.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.saga_lease_seconds == 3.0
    assert settings.database_url == "postgresql+asyncpg://db/orders"
    assert (settings.grpc_port, settings.metrics_port) == (6000, 0)
    assert settings.product_grpc_target == "products:50052"
    assert (settings.payment_timeout_seconds, settings.product_rpc_timeout_seconds) == (0.5, 1.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAYMENT_TIMEOUT_SECONDS", "0"),
        ("ORDER_GRPC_PORT", "70000"),
        ("ORDER_SAGA_MODE", "anarchy"),
        ("SAGA_LEASE_SECONDS", "0"),
    ],
)
def test_nonsense_is_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_production_refuses_an_empty_service_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIENDA_ENV", "production")
    with pytest.raises(ValidationError, match="SERVICE_CLIENT_SECRET"):
        Settings()
    monkeypatch.setenv("SERVICE_CLIENT_SECRET", "s3cret")
    assert Settings().environment == "production"


@pytest.mark.parametrize("environment", ["development", "test"])
def test_private_webhooks_may_be_allowed_outside_production(
    monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setenv("TIENDA_ENV", environment)
    assert Settings().webhook_allow_private is False
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    assert Settings().webhook_allow_private is True


def test_production_refuses_private_webhooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SSRF guard a deployment cannot switch off: loopback, private and link-local
    (cloud metadata) destinations stay refused in production."""
    monkeypatch.setenv("TIENDA_ENV", "production")
    monkeypatch.setenv("SERVICE_CLIENT_SECRET", "s3cret")
    assert Settings().webhook_allow_private is False
    monkeypatch.setenv("WEBHOOK_ALLOW_PRIVATE", "true")
    with pytest.raises(ValidationError, match="WEBHOOK_ALLOW_PRIVATE=true is for development"):
        Settings()
