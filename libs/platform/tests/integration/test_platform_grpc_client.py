"""Channels made by tienda_platform.grpc_client count every call they make, by status."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from tienda_platform.grpc_client import create_channel
from tienda_platform.testing import eventually

pytestmark = pytest.mark.integration

SERVICE = "grpc.health.v1.Health"


@pytest.fixture
async def health_server() -> AsyncIterator[str]:
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    await servicer.set("tienda.Known", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(grace=None)


def handled(code: str) -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "Check", "grpc_code": code}
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


def timed() -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": "Check"}
    return REGISTRY.get_sample_value("grpc_client_handling_seconds_count", labels) or 0.0


async def test_each_call_is_counted_by_the_status_it_got(health_server: str) -> None:
    ok, not_found, count = handled("OK"), handled("NOT_FOUND"), timed()
    async with create_channel(health_server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = await stub.Check(health_pb2.HealthCheckRequest(service="tienda.Known"))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Check(health_pb2.HealthCheckRequest(service="tienda.Unknown"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert handled("OK") == ok + 1
    assert handled("NOT_FOUND") == not_found + 1
    assert timed() == count + 2


async def test_a_call_in_a_sampled_trace_leaves_its_trace_id_as_an_exemplar(
    health_server: str,
) -> None:
    kept, dropped = TracerProvider(), TracerProvider(sampler=ParentBasedTraceIdRatio(0.0))
    async with create_channel(health_server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with kept.get_tracer("t").start_as_current_span("caller") as caller:
            await stub.Check(health_pb2.HealthCheckRequest(service="tienda.Known"))
        trace_id = format(caller.get_span_context().trace_id, "032x")
        assert trace_id in exemplars()
        with dropped.get_tracer("t").start_as_current_span("not kept") as other:
            await stub.Check(health_pb2.HealthCheckRequest(service="tienda.Known"))
        # a trace that is not kept leaves none (there would be nothing to open)
        assert format(other.get_span_context().trace_id, "032x") not in exemplars()


def exemplars() -> str:
    return "\n".join(
        line
        for line in openmetrics(REGISTRY).decode().splitlines()
        if line.startswith("grpc_client_handling_seconds_bucket{") and "# {trace_id=" in line
    )


async def test_a_call_that_never_reached_a_server_is_counted_unavailable() -> None:
    before = handled("UNAVAILABLE")
    async with create_channel("127.0.0.1:1") as channel:  # nothing listens on port 1
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert handled("UNAVAILABLE") == before + 1


class CountingHealth(health.aio.HealthServicer):
    """A replica: counts the checks it answered."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = 0

    async def Check(self, request, context):  # type: ignore[no-untyped-def]
        self.answered += 1
        return await super().Check(request, context)


@pytest.fixture
async def replicas() -> AsyncIterator[list[tuple[grpc.aio.Server, CountingHealth, int]]]:
    """Two servers of the same service, as two replicas behind one target."""
    started = []
    for _ in range(2):
        server, servicer = grpc.aio.server(), CountingHealth()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        started.append((server, servicer, port))
    try:
        yield started
    finally:
        for server, _, _ in started:
            await server.stop(grace=None)


async def test_calls_are_spread_over_every_replica_in_turn(
    replicas: list[tuple[grpc.aio.Server, CountingHealth, int]],
) -> None:
    (_, first, first_port), (_, second, second_port) = replicas
    target = f"ipv4:127.0.0.1:{first_port},127.0.0.1:{second_port}"
    async with create_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        # both connected (gRPC's default policy, pick_first, would send every call to the
        # first replica), then calls alternate
        await until_both_answered(stub, first, second)
        before = first.answered, second.answered
        for _ in range(20):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert (first.answered - before[0], second.answered - before[1]) == (10, 10)


async def test_a_replica_not_serving_or_stopped_takes_no_calls(
    replicas: list[tuple[grpc.aio.Server, CountingHealth, int]],
) -> None:
    (first_server, first, first_port), (_, second, second_port) = replicas
    target = f"ipv4:127.0.0.1:{first_port},127.0.0.1:{second_port}"
    async with create_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await until_both_answered(stub, first, second)
        # still starting, or draining: the channel watches its health and passes it by
        await first.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await eventually(lambda: passes_by(stub, first), within=10)
        answered = first.answered
        for _ in range(20):
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert first.answered == answered
        # serving again: it takes its turn again
        await first.set("", health_pb2.HealthCheckResponse.SERVING)
        await eventually(lambda: call_goes_to(stub, first), within=10)
        # stopped: every call is answered by the other
        await first_server.stop(grace=1)
        answered = second.answered
        for _ in range(20):
            reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert second.answered == answered + 20


async def until_both_answered(
    stub: health_pb2_grpc.HealthStub, first: CountingHealth, second: CountingHealth
) -> None:
    """Calls until each replica has answered one (the channel connects to both)."""
    for _ in range(200):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
        if first.answered and second.answered:
            return
    raise AssertionError(f"answered {first.answered} and {second.answered}: not both")


async def call_goes_to(stub: health_pb2_grpc.HealthStub, replica: CountingHealth) -> bool:
    """Whether the next two calls (one turn of two replicas) include one to `replica`."""
    answered = replica.answered
    for _ in range(2):
        await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
    return replica.answered > answered


async def passes_by(stub: health_pb2_grpc.HealthStub, replica: CountingHealth) -> bool:
    """Whether the next two calls both go to another replica."""
    return not await call_goes_to(stub, replica)
