"""What every process does first: JSON logs, tracing, and the build_info metric."""

from __future__ import annotations

from prometheus_client import Gauge

from tienda_platform.logging import configure_logging
from tienda_platform.settings import ServiceSettings
from tienda_platform.telemetry import configure_tracing

BUILD_INFO = Gauge(
    "tienda_build_info", "Always 1; labels name the running build.", ["service", "version"]
)


def start_observability(
    *, service_name: str, service_version: str, settings: ServiceSettings
) -> None:
    """Configure logs and traces, and publish tienda_build_info."""
    configure_logging(
        service_name=service_name,
        service_version=service_version,
        environment=settings.environment,
        level=settings.log_level,
    )
    configure_tracing(
        service_name=service_name,
        service_version=service_version,
        environment=settings.environment,
    )
    BUILD_INFO.labels(service_name, service_version).set(1)
