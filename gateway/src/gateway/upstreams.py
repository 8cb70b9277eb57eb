"""The gateway's gRPC clients: one channel per upstream, opened at start-up, and the calls
made through them with a deadline (the channels keep client-side metrics)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from importlib import import_module
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tienda_platform.grpc_client import create_channel

from gateway.breaker import CircuitBreaker
from gateway.errors import ApiError

Metadata = Sequence[tuple[str, str]]
HEALTH_CHECK_SECONDS = 2.0


class UnaryCall:
    """One unary RPC of one upstream; bound to its channel when the upstreams open."""

    def __init__(
        self,
        service: ServiceDescriptor,
        method: str,
        timeout: float,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.service = service.full_name
        self.method = method
        self.full_name = f"{service.full_name}/{method}"
        self.timeout = timeout
        self.breaker = breaker
        self._multicallable: Any = None

    def bind(self, stub: Any) -> None:
        self._multicallable = getattr(stub, self.method)

    async def __call__(self, request: Message, *, metadata: Metadata = ()) -> Any:
        """Call the RPC; a failure raises grpc.aio.AioRpcError."""
        if self._multicallable is None:
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "the gateway is not ready yet")
        breaker = self.breaker
        trial = breaker.admit() if breaker is not None else False  # raises CircuitOpen
        code = grpc.StatusCode.OK
        try:
            return await self._multicallable(request, timeout=self.timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            code = error.code()
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            if breaker is not None:
                breaker.record(code, trial=trial)


class Upstreams:
    """The upstream services by proto package, their channels and the calls made to them."""

    def __init__(
        self,
        *,
        targets: Mapping[str, str],
        timeout: float,
        breaker_failures: int,
        breaker_reset_seconds: float,
    ) -> None:
        self._targets = dict(targets)
        self._timeout = timeout
        # one circuit breaker per upstream service (all its methods share its fate)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breaker_failures = breaker_failures
        self._breaker_reset = breaker_reset_seconds
        self._calls: list[tuple[ServiceDescriptor, UnaryCall]] = []
        self._services: dict[str, ServiceDescriptor] = {}
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._health: dict[str, health_pb2_grpc.HealthStub] = {}

    def target_of(self, service: ServiceDescriptor) -> str:
        try:
            return self._targets[service.file.package]
        except KeyError:
            raise ValueError(f"no upstream target for {service.full_name}") from None

    def unary(self, service: ServiceDescriptor, method: str) -> UnaryCall:
        """A call of `method` of `service`, usable once the upstreams are open."""
        self.target_of(service)
        if method not in service.methods_by_name:
            raise ValueError(f"{service.full_name} has no method {method}")
        breaker = self._breakers.get(service.full_name)
        if breaker is None:
            breaker = self._breakers[service.full_name] = CircuitBreaker(
                service.full_name,
                failures=self._breaker_failures,
                reset_seconds=self._breaker_reset,
            )
        call = UnaryCall(service, method, self._timeout, breaker)
        self._calls.append((service, call))
        self._services[service.full_name] = service
        return call

    async def open(self) -> None:
        """Create one channel per target and bind every call to a stub on it."""
        stubs: dict[str, Any] = {}
        for service, call in self._calls:
            target = self.target_of(service)
            if target not in self._channels:
                self._channels[target] = create_channel(target)
                self._health[target] = health_pb2_grpc.HealthStub(self._channels[target])
            if service.full_name not in stubs:
                stubs[service.full_name] = _stub_class(service)(self._channels[target])
            call.bind(stubs[service.full_name])

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        self._health = {}
        await asyncio.gather(*(channel.close() for channel in channels.values()))

    async def health(self) -> dict[str, str]:
        """grpc.health.v1 status of every upstream service: SERVING, NOT_SERVING or an error."""
        names = sorted(self._services)
        results = await asyncio.gather(*(self._check(self._services[n]) for n in names))
        return dict(zip(names, results, strict=True))

    async def _check(self, service: ServiceDescriptor) -> str:
        stub = self._health.get(self.target_of(service))
        if stub is None:
            return "NOT_STARTED"
        try:
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=service.full_name),
                timeout=HEALTH_CHECK_SECONDS,
            )
        except grpc.aio.AioRpcError as error:
            return str(error.code().name)
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _stub_class(service: ServiceDescriptor) -> Any:
    """The generated stub class of a service: `<Name>Stub` in its `_pb2_grpc` module."""
    module = import_module(service.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc")
    return getattr(module, f"{service.name}Stub")
