"""auth_service settings: read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

from functools import lru_cache

from argon2 import PasswordHasher
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from tienda_platform.errors import Validator
from tienda_platform.settings import ServiceSettings, env

from auth_service.domain.model import (
    PASSWORD_MAX_LENGTH,
    SERVICE_CLIENT_SECRET_MIN_LENGTH,
    check_email,
    parse_service_client_secrets,
    password_problem,
)

# argon2-cffi's own defaults (RFC 9106 low-memory profile); production may not go below them.
_ARGON2_DEFAULTS = PasswordHasher()


class Settings(ServiceSettings):
    """auth_service's settings, on top of the shared ones."""

    # A refused setting must not echo the input: it holds the admin password and client secrets.
    model_config = SettingsConfigDict(hide_input_in_errors=True)

    database_url: str = Field("", validation_alias=env("AUTH_DATABASE_URL"))
    grpc_port: int = Field(50051, ge=0, le=65535, validation_alias=env("AUTH_GRPC_PORT"))
    metrics_port: int | None = Field(
        9101, ge=0, le=65535, validation_alias=env("AUTH_METRICS_PORT")
    )
    bootstrap_admin_email: str | None = Field(None, validation_alias=env("BOOTSTRAP_ADMIN_EMAIL"))
    bootstrap_admin_password: SecretStr | None = Field(
        None, validation_alias=env("BOOTSTRAP_ADMIN_PASSWORD")
    )
    access_token_ttl_seconds: int = Field(
        900, ge=1, le=86_400, validation_alias=env("ACCESS_TOKEN_TTL_SECONDS")
    )
    refresh_token_ttl_seconds: int = Field(
        30 * 86_400, ge=60, le=365 * 86_400, validation_alias=env("REFRESH_TOKEN_TTL_SECONDS")
    )
    argon2_time_cost: int = Field(
        _ARGON2_DEFAULTS.time_cost, ge=1, validation_alias=env("ARGON2_TIME_COST")
    )
    argon2_memory_cost_kib: int = Field(
        _ARGON2_DEFAULTS.memory_cost, ge=8, validation_alias=env("ARGON2_MEMORY_COST_KIB")
    )
    argon2_parallelism: int = Field(
        _ARGON2_DEFAULTS.parallelism, ge=1, validation_alias=env("ARGON2_PARALLELISM")
    )
    service_client_secrets: SecretStr = Field(
        SecretStr(""), validation_alias=env("SERVICE_CLIENT_SECRETS")
    )

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        if not self.database_url:
            self.database_url = self.sqlite_url("auth")
        email, password = self.bootstrap_admin_email, self.bootstrap_admin_password
        if (email is None) != (password is None):
            raise ValueError(
                "set both BOOTSTRAP_ADMIN_EMAIL and BOOTSTRAP_ADMIN_PASSWORD, or neither"
            )
        if email is not None:
            validator = Validator()
            check_email(validator, email, "BOOTSTRAP_ADMIN_EMAIL")
            if validator.violations:
                raise ValueError("BOOTSTRAP_ADMIN_EMAIL is not a valid email address")
        if (
            password is not None
            and not 1 <= len(password.get_secret_value()) <= PASSWORD_MAX_LENGTH
        ):
            raise ValueError(
                f"BOOTSTRAP_ADMIN_PASSWORD must be 1 to {PASSWORD_MAX_LENGTH} characters"
            )
        if self.argon2_memory_cost_kib < 8 * self.argon2_parallelism:
            raise ValueError("ARGON2_MEMORY_COST_KIB must be at least 8 x ARGON2_PARALLELISM")
        try:
            self.service_clients()
        except ValueError as error:
            raise ValueError(f"SERVICE_CLIENT_SECRETS: {error}") from None
        return self

    def service_clients(self) -> dict[str, str]:
        """SERVICE_CLIENT_SECRETS as client id -> secret."""
        return parse_service_client_secrets(self.service_client_secrets.get_secret_value())

    def insecure_defaults(self) -> list[str]:
        """A weak admin password, short client secrets, or argon2 costs below its defaults."""
        names = []
        if self.bootstrap_admin_password is not None and password_problem(
            self.bootstrap_admin_password.get_secret_value(), email=self.bootstrap_admin_email or ""
        ):
            names.append("BOOTSTRAP_ADMIN_PASSWORD")
        if any(len(s) < SERVICE_CLIENT_SECRET_MIN_LENGTH for s in self.service_clients().values()):
            names.append("SERVICE_CLIENT_SECRETS")
        if self.argon2_time_cost < _ARGON2_DEFAULTS.time_cost:
            names.append("ARGON2_TIME_COST")
        if self.argon2_memory_cost_kib < _ARGON2_DEFAULTS.memory_cost:
            names.append("ARGON2_MEMORY_COST_KIB")
        return names


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
