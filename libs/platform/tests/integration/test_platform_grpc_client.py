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
