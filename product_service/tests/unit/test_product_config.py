"""Settings come from the PRODUCT_* environment variables, with working defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from product_service.config import Settings
from pydantic import ValidationError

pytestmark = pytest.mark.unit

VARIABLES = (
    "PRODUCT_DATABASE_URL",
    "PRODUCT_GRPC_PORT",
    "PRODUCT_METRICS_PORT",
    "PRODUCT_SEED_DEMO",
    "TIENDA_DATA_DIR",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIENDA_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path.resolve() / 'product.db'}"
    assert (settings.grpc_port, settings.metrics_port, settings.seed_demo) == (50052, 9102, False)


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "postgresql+asyncpg://tienda@db:5432/product"
    monkeypatch.setenv("PRODUCT_DATABASE_URL", url)
    monkeypatch.setenv("PRODUCT_GRPC_PORT", "6000")
    monkeypatch.setenv("PRODUCT_METRICS_PORT", "6001")
    monkeypatch.setenv("PRODUCT_SEED_DEMO", "true")
    settings = Settings()
    assert (settings.database_url, settings.grpc_port, settings.metrics_port) == (url, 6000, 6001)
    assert settings.seed_demo is True


@pytest.mark.parametrize(
    ("name", "value"), [("PRODUCT_GRPC_PORT", "70000"), ("PRODUCT_SEED_DEMO", "maybe")]
)
def test_bad_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
