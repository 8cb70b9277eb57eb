"""Settings: defaults, and what production refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from auth_service.config import Settings
from pydantic import ValidationError

pytestmark = pytest.mark.unit

STRONG = "admin-password-2024"


def _settings(**values: Any) -> Settings:
    return Settings(**values)


def test_defaults(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'auth.db'}"
    assert (settings.grpc_port, settings.metrics_port) == (50051, 9101)
    assert (settings.access_token_ttl_seconds, settings.refresh_token_ttl_seconds) == (
        900,
        2_592_000,
    )
    assert settings.bootstrap_admin_email is None and settings.bootstrap_admin_password is None


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTH_DATABASE_URL", "postgresql+asyncpg://db/auth")
    monkeypatch.setenv("AUTH_GRPC_PORT", "6000")
    monkeypatch.setenv("BOOTSTRAP_ADMIN_EMAIL", "root@example.com")
    monkeypatch.setenv("BOOTSTRAP_ADMIN_PASSWORD", STRONG)
    monkeypatch.setenv("ACCESS_TOKEN_TTL_SECONDS", "60")
    settings = _settings()
    assert settings.database_url == "postgresql+asyncpg://db/auth"
    assert settings.grpc_port == 6000 and settings.access_token_ttl_seconds == 60
    assert settings.bootstrap_admin_password is not None
    assert settings.bootstrap_admin_password.get_secret_value() == STRONG
    assert STRONG not in repr(settings)


def test_production_refuses_a_weak_bootstrap_password() -> None:
    with pytest.raises(ValidationError, match="BOOTSTRAP_ADMIN_PASSWORD"):
        _settings(
            environment="production",
            bootstrap_admin_email="root@example.com",
            bootstrap_admin_password="admin",
        )


def test_production_accepts_a_strong_bootstrap_password() -> None:
    settings = _settings(
        environment="production",
        bootstrap_admin_email="root@example.com",
        bootstrap_admin_password=STRONG,
    )
    assert settings.insecure_defaults() == []


def test_development_allows_a_weak_bootstrap_password() -> None:
    settings = _settings(bootstrap_admin_email="root@example.com", bootstrap_admin_password="admin")
    assert "BOOTSTRAP_ADMIN_PASSWORD" in settings.insecure_defaults()  # flagged, not refused


def test_production_refuses_cheap_argon2_costs() -> None:
    with pytest.raises(ValidationError, match=r"ARGON2_TIME_COST.*ARGON2_MEMORY_COST_KIB"):
        _settings(environment="production", argon2_time_cost=1, argon2_memory_cost_kib=8)


@pytest.mark.parametrize(
    "values",
    [
        {"bootstrap_admin_email": "root@example.com"},
        {"bootstrap_admin_password": STRONG},
        {"bootstrap_admin_email": "not-an-email", "bootstrap_admin_password": STRONG},
        {"bootstrap_admin_email": "root@example.com", "bootstrap_admin_password": "x" * 129},
        {"argon2_memory_cost_kib": 8, "argon2_parallelism": 2},
    ],
)
def test_inconsistent_settings_are_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _settings(**values)


SECRET = "s" * 32


def test_service_client_secrets_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SERVICE_CLIENT_SECRETS", f" order_service:{SECRET}, product_service:a:b ,")
    settings = _settings()
    assert settings.service_clients() == {"order_service": SECRET, "product_service": "a:b"}
    assert SECRET not in repr(settings)


def test_no_service_clients_by_default() -> None:
    assert _settings().service_clients() == {}


@pytest.mark.parametrize(
    "value",
    [
        "order_service",
        "order_service:",
        ":hunter2x",
        "Order Service:hunter2x",
        "order_service:hunter2x,order_service:hunter2x",
        f"order_service:{'s' * 257}",
        "order_service:hunter2x,bad id:x",
    ],
)
def test_malformed_service_client_secrets_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ValidationError, match="SERVICE_CLIENT_SECRETS") as raised:
        _settings(service_client_secrets=value)
    assert "hunter2x" not in str(raised.value) and "s" * 20 not in str(raised.value)


def test_production_refuses_short_service_client_secrets() -> None:
    short = "order_service:hunter2x"
    with pytest.raises(ValidationError, match="SERVICE_CLIENT_SECRETS") as raised:
        _settings(environment="production", service_client_secrets=f"a:{SECRET},{short}")
    assert "hunter2x" not in str(raised.value)
    _settings(service_client_secrets=short)  # fine outside production


def test_production_accepts_service_client_secrets_of_32_characters() -> None:
    settings = _settings(environment="production", service_client_secrets=f"order_service:{SECRET}")
    assert settings.insecure_defaults() == []
