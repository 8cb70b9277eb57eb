"""order_service's settings; nothing else in the service reads the environment."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from tienda_platform.settings import ServiceSettings, env


class Settings(ServiceSettings):
    """Settings of order_service, on top of those every service shares."""

    # Empty means the default SQLite file under TIENDA_DATA_DIR, filled in below.
    database_url: str = Field("", validation_alias=env("ORDER_DATABASE_URL"))
    grpc_port: int = Field(50053, ge=0, le=65535, validation_alias=env("ORDER_GRPC_PORT"))
    # 0 turns the Prometheus endpoint off.
    metrics_port: int = Field(9103, ge=0, le=65535, validation_alias=env("ORDER_METRICS_PORT"))
    product_grpc_target: str = Field("127.0.0.1:50052", validation_alias=env("PRODUCT_GRPC_TARGET"))
    payment_timeout_seconds: float = Field(
        2.0, gt=0, validation_alias=env("PAYMENT_TIMEOUT_SECONDS")
    )
    product_rpc_timeout_seconds: float = Field(
        3.0, gt=0, validation_alias=env("PRODUCT_RPC_TIMEOUT_SECONDS")
    )
    # How new orders are coordinated; each order keeps the mode it was placed in.
    saga_mode: Literal["orchestration", "choreography"] = Field(
        "orchestration", validation_alias=env("ORDER_SAGA_MODE")
    )
    # Client credentials for AuthService/IssueServiceToken (product_service's internal RPCs).
    service_client_secret: SecretStr = Field(
        SecretStr(""), validation_alias=env("SERVICE_CLIENT_SECRET")
    )
    # A saga worker's claim on a saga: how long a crashed worker's sagas wait to be resumed.
    saga_lease_seconds: float = Field(15.0, gt=0, validation_alias=env("SAGA_LEASE_SECONDS"))
    saga_poll_seconds: float = Field(0.5, gt=0, validation_alias=env("SAGA_POLL_SECONDS"))
    saga_max_backoff_seconds: float = Field(
        30.0, gt=0, validation_alias=env("SAGA_MAX_BACKOFF_SECONDS")
    )
    # Webhooks: private, loopback and link-local destinations only in development and tests.
    webhook_allow_private: bool = Field(False, validation_alias=env("WEBHOOK_ALLOW_PRIVATE"))
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=120, validation_alias=env("WEBHOOK_TIMEOUT_SECONDS")
    )
    webhook_max_attempts: int = Field(8, ge=1, le=50, validation_alias=env("WEBHOOK_MAX_ATTEMPTS"))
    # Retries of webhook deliveries and emails: exponential backoff with full jitter, the wait
    # after attempt n drawn from [0, min(max, base * 2**(n-1))).
    delivery_retry_base_seconds: float = Field(
        5.0, gt=0, validation_alias=env("DELIVERY_RETRY_BASE_SECONDS")
    )
    delivery_retry_max_seconds: float = Field(
        3600.0, gt=0, validation_alias=env("DELIVERY_RETRY_MAX_SECONDS")
    )
    # Emails over SMTP; an empty SMTP_HOST turns them off.
    smtp_host: str = Field("", validation_alias=env("SMTP_HOST"))
    smtp_port: int = Field(1025, ge=1, le=65535, validation_alias=env("SMTP_PORT"))
    smtp_from: str = Field("tienda <no-reply@tienda.local>", validation_alias=env("SMTP_FROM"))
    email_max_attempts: int = Field(8, ge=1, le=50, validation_alias=env("EMAIL_MAX_ATTEMPTS"))

    def insecure_defaults(self) -> list[str]:
        """Production refuses to run without a service secret."""
        names = super().insecure_defaults()
        if not self.service_client_secret.get_secret_value():
            names.append("SERVICE_CLIENT_SECRET")
        return names

    @model_validator(mode="after")
    def _no_private_webhooks_in_production(self) -> Settings:
        if self.environment == "production" and self.webhook_allow_private:
            raise ValueError("WEBHOOK_ALLOW_PRIVATE=true is for development and tests only")
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = self.sqlite_url("order")
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
