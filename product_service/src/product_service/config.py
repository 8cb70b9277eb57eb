"""product_service settings: read once from the environment; nothing else reads os.environ."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from tienda_platform.settings import ServiceSettings, env


class Settings(ServiceSettings):
    # Empty means the default: a SQLite file under TIENDA_DATA_DIR (filled in below).
    database_url: str = Field("", validation_alias=env("PRODUCT_DATABASE_URL"))
    grpc_port: int = Field(50052, ge=0, le=65535, validation_alias=env("PRODUCT_GRPC_PORT"))
    metrics_port: int | None = Field(
        9102, ge=0, le=65535, validation_alias=env("PRODUCT_METRICS_PORT")
    )
    # Insert demo products at start-up when the catalogue is empty (so only once).
    seed_demo: bool = Field(False, validation_alias=env("PRODUCT_SEED_DEMO"))

    @model_validator(mode="after")
    def _complete(self) -> Settings:
        if not self.database_url:
            self.database_url = self.sqlite_url("product")
        return self


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read from the environment once."""
    return Settings()
