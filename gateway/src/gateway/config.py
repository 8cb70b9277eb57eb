"""gateway settings: the only place that reads the environment."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from tienda_platform.settings import ServiceSettings, env


class Settings(ServiceSettings):
    """Settings of the REST gateway; every field can be set by the environment variable named."""

    gateway_port: int = Field(8080, ge=0, le=65535, validation_alias=env("GATEWAY_PORT"))
    product_grpc_target: str = Field("127.0.0.1:50052", validation_alias=env("PRODUCT_GRPC_TARGET"))
    order_grpc_target: str = Field("127.0.0.1:50053", validation_alias=env("ORDER_GRPC_TARGET"))
    gateway_max_body_bytes: int = Field(
        1024 * 1024, ge=1, validation_alias=env("GATEWAY_MAX_BODY_BYTES")
    )
    gateway_max_header_bytes: int = Field(
        32 * 1024, ge=1024, validation_alias=env("GATEWAY_MAX_HEADER_BYTES")
    )
    gateway_read_timeout_seconds: float = Field(
        15.0, gt=0, validation_alias=env("GATEWAY_READ_TIMEOUT_SECONDS")
    )
    upstream_timeout_seconds: float = Field(
        10.0, gt=0, validation_alias=env("UPSTREAM_TIMEOUT_SECONDS")
    )
    # an upstream failing this many calls in a row is not called for the reset time (0: never)
    gateway_breaker_failures: int = Field(5, ge=0, validation_alias=env("GATEWAY_BREAKER_FAILURES"))
    gateway_breaker_reset_seconds: float = Field(
        5.0, gt=0, validation_alias=env("GATEWAY_BREAKER_RESET_SECONDS")
    )

    def upstream_targets(self) -> dict[str, str]:
        """The address of each upstream, by the proto package that names its service."""
        return {
            "auth.v1": self.auth_grpc_target,
            "product.v1": self.product_grpc_target,
            "order.v1": self.order_grpc_target,
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    return Settings()
