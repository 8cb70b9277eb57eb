"""Channels between services: retries on UNAVAILABLE, keepalive, client-side RED metrics,
and the caller's bearer token."""

from __future__ import annotations

import asyncio
import json
import time
from functools import lru_cache
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from tienda_platform import grpc_tracing, telemetry
from tienda_platform.metrics import child, metrics_enabled

GRPC_CLIENT_HANDLED = Counter(
    "grpc_client_handled_total",
    "RPCs this process made to another service, by method and the status it got.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_CLIENT_SECONDS = Histogram(
    "grpc_client_handling_seconds",
    "Time from sending an RPC to getting its status, by method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


@lru_cache(maxsize=1024)
def _labels(method: str) -> tuple[str, str]:
    """("/pkg.Service/Method") -> ("pkg.Service", "Method")."""
    _, service, name = method.split("/", 2)
    return service, name


class ClientMetricsInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """grpc_client_handled_total and grpc_client_handling_seconds for every unary call made
    on the channel (its transparent retries are one call)."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        method = client_call_details.method
        service, name = _labels(method.decode() if isinstance(method, bytes) else method)
        started = time.perf_counter()
        code = grpc.StatusCode.UNKNOWN
        try:
            call = await continuation(client_call_details, request)
            await call  # the answer; the caller's own await gets it again
            code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            child(GRPC_CLIENT_HANDLED, service, name, code.name).inc()
            child(GRPC_CLIENT_SECONDS, service, name).observe(
                time.perf_counter() - started, exemplar=telemetry.exemplar()
            )
        return call


_SERVICE_CONFIG = json.dumps(
    {
        # every address the target resolves to, in turn (gRPC's default, pick_first, sends
        # every call of a channel to the first address that answers: one replica of many)
        "loadBalancingConfig": [{"round_robin": {}}],
        # ... that reports SERVING on its grpc.health.v1 Watch stream: a replica still
        # starting (migrations, seeding) or draining after SIGTERM takes no new call
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


def create_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel (TLS terminates at the mesh or the gateway) with transparent
    retries of calls that never reached a server, spread round robin over the replicas.

    target: `host:port`, whose name may resolve to several addresses (`dns:///host:port`
    says so explicitly: a Kubernetes headless Service gives one per ready pod), or a list,
    `ipv4:10.0.0.5:50053,10.0.0.6:50053`. Calls go in turn to the addresses whose server
    reports SERVING (grpc.health.v1, watched by the channel; a server without the health
    service counts as serving); one starting, draining after SIGTERM or gone takes none. The
    name is resolved again whenever a connection closes, which each server does after
    MAX_CONNECTION_AGE_SECONDS (tienda_platform.grpc_server), so new replicas get calls too."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=[
            *([ClientMetricsInterceptor()] if metrics_enabled() else []),
            *grpc_tracing.client_interceptors(),
        ],
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that forwards a bearer token."""
    return (("authorization", f"Bearer {token}"),)
