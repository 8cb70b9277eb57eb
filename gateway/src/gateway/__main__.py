"""`python -m gateway`: serve the REST gateway with uvicorn until SIGTERM/SIGINT."""

from __future__ import annotations

import math

import uvicorn
from tienda_platform.runtime import start_observability

from gateway import __version__
from gateway.app import create_app
from gateway.config import get_settings
from gateway.http_protocol import bounded_protocol


def main() -> None:
    """Configure logs and traces, build the app and serve it on BIND_HOST:GATEWAY_PORT."""
    settings = get_settings()
    start_observability(service_name="gateway", service_version=__version__, settings=settings)
    uvicorn.run(
        create_app(settings=settings),
        host=settings.bind_host,
        port=settings.gateway_port,
        loop="uvloop",
        # httptools, with bounds on a request's head
        http=bounded_protocol(
            settings.gateway_max_header_bytes, settings.gateway_read_timeout_seconds
        ),
        lifespan="on",
        access_log=False,  # RequestObservability logs one line per request instead
        log_config=None,  # keep the JSON logging configured above
        server_header=False,
        proxy_headers=False,  # nothing here reads the client address
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )


if __name__ == "__main__":
    main()
