"""What every process does first (JSON logs, tracing, the build_info metric), the event loop
it runs on, and what it does once it is ready (the start-up heap set aside from the garbage
collector)."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

from prometheus_client import Gauge

from tienda_platform import stackcache
from tienda_platform.logging import configure_logging
from tienda_platform.settings import ServiceSettings
from tienda_platform.telemetry import configure_tracing

T = TypeVar("T")

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


# Container objects allocated, net, between two young-generation collections (CPython's
# default is 700), and how many of those between collections of the older generations.
GC_THRESHOLDS = (10_000, 20, 20)


def settle_heap() -> None:
    """Called by each gRPC service once it is ready (the gateway's collections cost little):
    the objects of its start-up (modules, descriptors, mappers, compiled statements: most of
    the heap, and never garbage) are frozen out of the garbage collector's way, and it
    collects less often.

    A request allocates thousands of short-lived objects (spans above all, with tracing on),
    so with CPython's defaults full collections came often, and each walked every start-up
    object again."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run a service's main coroutine to completion on uvloop's event loop (libuv), as the
    gateway's uvicorn does; asyncio's own loop where uvloop does not exist (Windows).

    A service's CPU goes largely to the event loop's own work: every gRPC call, Redis reply
    and database round trip is a few callbacks and task steps, which uvloop does in C.

    The greenlets of SQLAlchemy's asyncio layer reuse their frame stacks
    (tienda_platform.stackcache) rather than map and unmap one each."""
    stackcache.install()
    if sys.platform != "win32":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)  # pragma: no cover - Windows
