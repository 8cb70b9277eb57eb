"""Start-up and shutdown of a service's grpc.aio server, with health, reflection and metrics.

Health is NOT_SERVING until `prepare` (migrations, seeding) has finished; on SIGTERM or SIGINT
every service is set NOT_SERVING first, the server goes on taking calls until its callers have
turned away, then in-flight RPCs drain for the grace period.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from loguru import logger
from prometheus_client import start_http_server

from tienda_platform import grpc_tracing
from tienda_platform.aio import cancel_and_wait
from tienda_platform.auth import TokenVerifier
from tienda_platform.interceptors import (
    AuthInterceptor,
    ErrorMappingInterceptor,
    MetricsInterceptor,
)
from tienda_platform.metrics import metrics_enabled
from tienda_platform.runtime import settle_heap

# Probes and load balancers call health checks without a token.
ALWAYS_PUBLIC = frozenset({"/grpc.health.v1.Health/Check"})
HEALTH_METHODS = "/grpc.health.v1.Health/"

# Incoming messages above this size are refused with RESOURCE_EXHAUSTED before parsing.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024

# A client's connection is closed (GOAWAY) after about this long, so that it resolves the
# target again and spreads its calls over replicas started since: a channel resolves a name
# only when a connection closes. gRPC adds a jitter of 10%. The calls in flight on it get
# the grace below to finish, longer than any caller's deadline here.
MAX_CONNECTION_AGE_SECONDS = 300.0
MAX_CONNECTION_AGE_GRACE_SECONDS = 60.0

# After NOT_SERVING, calls still arrive for a moment: those the callers sent before the
# status reached them. gRPC cancels (CANCELLED, not retried) every call that arrives once the
# server has begun to stop, and those that arrived but did not reach a handler yet. So the
# server goes on serving until no call has arrived for TURNED_AWAY_SECONDS (callers that watch
# health, as tienda_platform.grpc_client's channels do, turn away within milliseconds), or
# for at most TURN_AWAY_LIMIT_SECONDS (a caller that does not watch health moves on only at
# the GOAWAY the stop sends).
TURNED_AWAY_SECONDS = 0.25
TURN_AWAY_LIMIT_SECONDS = 2.0


@dataclass(frozen=True)
class GrpcService:
    """One gRPC service to serve: its full name and how to add its servicer to a server."""

    name: str
    register: Callable[[grpc.aio.Server], None]


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    metrics_port: int | None
    grace_seconds: float
    max_connection_age_seconds: float = MAX_CONNECTION_AGE_SECONDS


class _CallClock(grpc.aio.ServerInterceptor):
    """When the last call other than a health check arrived."""

    def __init__(self) -> None:
        self.last_arrival = time.monotonic()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not handler_call_details.method.startswith(HEALTH_METHODS):
            self.last_arrival = time.monotonic()
        return await continuation(handler_call_details)


class GrpcServer:
    """A grpc.aio server with health checking, reflection, auth and error mapping."""

    def __init__(
        self,
        *,
        services: Sequence[GrpcService],
        config: ServerConfig,
        verifier: TokenVerifier,
        public_methods: frozenset[str],
    ) -> None:
        self.config = config
        self.services = list(services)
        self.health = health.aio.HealthServicer()
        self._clock = _CallClock()
        self.server = grpc.aio.server(
            interceptors=[
                self._clock,
                *grpc_tracing.server_interceptors(),
                ErrorMappingInterceptor(),
                *([MetricsInterceptor()] if metrics_enabled() else []),
                AuthInterceptor(verifier, public_methods | ALWAYS_PUBLIC),
            ],
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", round(config.max_connection_age_seconds * 1000)),
                (
                    "grpc.max_connection_age_grace_ms",
                    round(MAX_CONNECTION_AGE_GRACE_SECONDS * 1000),
                ),
            ],
        )
        for service in self.services:
            service.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        names = [s.name for s in self.services]
        reflection.enable_server_reflection(
            [*names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self.bound_port = 0

    async def start(self) -> None:
        """Bind and start; every service reports NOT_SERVING until `mark_serving`."""
        await self._set_all(health_pb2.HealthCheckResponse.NOT_SERVING)
        address = f"{self.config.host}:{self.config.port}"
        self.bound_port = self.server.add_insecure_port(address)
        if self.bound_port == 0:
            raise RuntimeError(f"cannot bind gRPC port {address}")
        await self.server.start()
        if self.config.metrics_port is not None and metrics_enabled():
            start_http_server(self.config.metrics_port, addr=self.config.host)

    async def mark_serving(self) -> None:
        await self._set_all(health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        """NOT_SERVING first, so balancers stop routing here; serve until the callers have
        turned away, then drain in-flight RPCs."""
        await self.health.enter_graceful_shutdown()
        await self._callers_turned_away()
        await self.server.stop(self.config.grace_seconds)

    async def _callers_turned_away(self) -> None:
        limit = time.monotonic() + TURN_AWAY_LIMIT_SECONDS
        while (now := time.monotonic()) < limit:
            quiet_until = self._clock.last_arrival + TURNED_AWAY_SECONDS
            if now >= quiet_until:
                return
            await asyncio.sleep(min(quiet_until, limit) - now)

    async def _set_all(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        await self.health.set("", status)
        for service in self.services:
            await self.health.set(service.name, status)


async def run_until_signalled(
    server: GrpcServer,
    *,
    prepare: Callable[[], Awaitable[None]],
    background: Sequence[Callable[[], Awaitable[None]]] = (),
    cleanup: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Start, prepare, serve until SIGTERM/SIGINT, then shut down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    await prepare()
    tasks: list[asyncio.Future[None]] = [asyncio.ensure_future(job()) for job in background]
    settle_heap()
    await server.mark_serving()
    logger.info(
        "serving {services} on {host}:{port}",
        services=",".join(s.name for s in server.services),
        host=server.config.host,
        port=server.bound_port,
        event_loop=type(loop).__module__.partition(".")[0],  # uvloop, or asyncio
    )
    await stop.wait()
    logger.info("shutting down")
    await server.stop()
    await cancel_and_wait(tasks)
    if cleanup is not None:
        await cleanup()
