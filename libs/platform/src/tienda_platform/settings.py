"""The settings base every service extends: one pydantic-settings class per service."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def env(*names: str) -> AliasChoices:
    """Read a field from the first of these environment variables that is set."""
    return AliasChoices(*names)


class ServiceSettings(BaseSettings):
    """Settings shared by all services. Subclasses add their own, with their own prefix."""

    model_config = SettingsConfigDict(
        extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = Field(
        "development", validation_alias=env("TIENDA_ENV")
    )
    log_level: str = Field("INFO", validation_alias=env("LOG_LEVEL"))
    data_dir: Path = Field(Path("data"), validation_alias=env("TIENDA_DATA_DIR"))
    bind_host: str = Field("127.0.0.1", validation_alias=env("BIND_HOST"))
    auth_grpc_target: str = Field("127.0.0.1:50051", validation_alias=env("AUTH_GRPC_TARGET"))
    jwt_issuer: str = Field("tienda-auth", validation_alias=env("JWT_ISSUER"))
    jwt_audience: str = Field("tienda", validation_alias=env("JWT_AUDIENCE"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=env("REDIS_URL"))
    shutdown_grace_seconds: float = Field(5.0, validation_alias=env("SHUTDOWN_GRACE_SECONDS"))

    def sqlite_url(self, name: str) -> str:
        """Default database: a SQLite file per service under the data folder."""
        return f"sqlite+aiosqlite:///{(self.data_dir / f'{name}.db').resolve()}"

    def insecure_defaults(self) -> list[str]:
        """Names of settings that still hold a development-only value."""
        return []

    @model_validator(mode="after")
    def _refuse_insecure_defaults_in_production(self) -> ServiceSettings:
        if self.environment == "production" and (names := self.insecure_defaults()):
            raise ValueError(f"development-only values are not allowed in production: {names}")
        return self
