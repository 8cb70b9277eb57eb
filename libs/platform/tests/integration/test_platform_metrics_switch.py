"""METRICS_ENABLED=false leaves out every per-request and per-event metric: the gRPC server's
and channels' interceptors, the metrics endpoint, FastStream's Prometheus middleware and the
stream gauges' polling."""

from __future__ import annotations

import asyncio
import socket

import pytest
from faststream.redis.prometheus import RedisPrometheusMiddleware
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY
from tienda_contracts.topology import Subscription
from tienda_platform.grpc_client import create_channel
from tienda_platform.grpc_server import GrpcServer, ServerConfig
from tienda_platform.messaging import create_broker, watch_streams
from tienda_platform.metrics import metrics_enabled
from tienda_platform.redis_server import free_port
from tienda_platform.testing import TokenMint

pytestmark = pytest.mark.integration

HEALTH = {"grpc_service": "grpc.health.v1.Health", "grpc_method": "Check"}


def served() -> float:
    labels = {**HEALTH, "grpc_code": "OK"}
    return REGISTRY.get_sample_value("grpc_server_handled_total", labels) or 0.0


def called() -> float:
    labels = {**HEALTH, "grpc_code": "OK"}
    return REGISTRY.get_sample_value("grpc_client_handled_total", labels) or 0.0


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.parametrize("value", ["", "true", "TRUE", "1"])
def test_metrics_are_on_unless_switched_off(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value:
        monkeypatch.setenv("METRICS_ENABLED", value)
    else:
        monkeypatch.delenv("METRICS_ENABLED", raising=False)
    assert metrics_enabled()


@pytest.mark.parametrize("value", ["false", "False", "0", "no", "off"])
def test_metrics_switched_off(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METRICS_ENABLED", value)
    assert not metrics_enabled()


@pytest.mark.parametrize("enabled", [True, False])
async def test_calls_are_counted_on_both_sides_only_with_metrics_on(
    enabled: bool, token_mint: TokenMint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_ENABLED", str(enabled).lower())
    metrics_port = free_port()
    server = GrpcServer(
        services=[],
        config=ServerConfig(host="127.0.0.1", port=0, metrics_port=metrics_port, grace_seconds=1),
        verifier=token_mint.verifier(),
        public_methods=frozenset(),
    )
    await server.start()
    await server.mark_serving()
    try:
        assert listening(metrics_port) is enabled
        served_before, called_before = served(), called()
        async with create_channel(f"127.0.0.1:{server.bound_port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest()
            )
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        assert served() == served_before + (1 if enabled else 0)
        assert called() == called_before + (1 if enabled else 0)
    finally:
        await server.stop()


@pytest.mark.parametrize("enabled", [True, False])
def test_the_broker_has_the_prometheus_middleware_only_with_metrics_on(
    enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METRICS_ENABLED", str(enabled).lower())
    broker = create_broker("redis://127.0.0.1:1/0", service_name="switch-test")
    prometheus = [m for m in broker.middlewares if isinstance(m, RedisPrometheusMiddleware)]
    assert len(prometheus) == (1 if enabled else 0)


async def test_with_metrics_off_the_stream_gauges_are_not_polled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It returns at once, without connecting to Redis (here a port nothing listens on,
    which would otherwise keep it retrying until cancelled)."""
    monkeypatch.setenv("METRICS_ENABLED", "false")
    broker = create_broker(f"redis://127.0.0.1:{free_port()}/0", service_name="switch-test")
    subscription = Subscription("g", "tienda.switch.events", ("switch.tested",), "a test")
    await asyncio.wait_for(watch_streams(broker, [subscription], interval=0.01), timeout=5)
