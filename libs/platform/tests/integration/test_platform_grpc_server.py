"""A real grpc.aio server built by GrpcServer: health, reflection, auth and error mapping."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import os
import signal
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from auth.v1 import auth_pb2, auth_pb2_grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry import trace
from opentelemetry.trace import SpanContext
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics
from tienda_platform import grpc_server
from tienda_platform.auth import current_principal
from tienda_platform.errors import InvalidArgument, NotFound
from tienda_platform.grpc_client import create_channel
from tienda_platform.grpc_server import GrpcServer, GrpcService, ServerConfig, run_until_signalled
from tienda_platform.runtime import GC_THRESHOLDS
from tienda_platform.testing import TokenMint, eventually

pytestmark = pytest.mark.integration

SERVICE = "auth.v1.AuthService"


# the trace context each GetJwks ran in
SEEN_CONTEXTS: list[SpanContext] = []


class Servicer(auth_pb2_grpc.AuthServiceServicer):
    """GetJwks is public; GetUser needs a token and fails in the ways the test asks for."""

    async def GetJwks(self, request, context):  # type: ignore[no-untyped-def]
        SEEN_CONTEXTS.append(trace.get_current_span().get_span_context())
        return auth_pb2.Jwks()

    async def GetUser(self, request, context):  # type: ignore[no-untyped-def]
        if request.id == "whoami":
            return auth_pb2.User(id=current_principal().user_id)
        if request.id == "missing":
            raise NotFound("user missing not found")
        if request.id == "bad":
            raise InvalidArgument.for_field("id", "not a UUID")
        if request.id == "database-down":
            raise ConnectionRefusedError("connect to 127.0.0.1:5432 refused")
        raise RuntimeError("database password is hunter2")


def new_server(token_mint: TokenMint) -> GrpcServer:
    return GrpcServer(
        services=[
            GrpcService(
                SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(Servicer(), s)
            )
        ],
        config=ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1),
        verifier=token_mint.verifier(),
        public_methods=frozenset({f"/{SERVICE}/GetJwks"}),
    )


@pytest.fixture
async def server(token_mint: TokenMint) -> AsyncIterator[GrpcServer]:
    server = new_server(token_mint)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
        yield channel


async def test_health_is_not_serving_until_marked_then_serving(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    await server.mark_serving()
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_shutdown_reports_not_serving_before_the_server_stops(
    server: GrpcServer, channel: grpc.aio.Channel
) -> None:
    await server.mark_serving()
    health = health_pb2_grpc.HealthStub(channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
    stopping = asyncio.create_task(server.stop())
    assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
    await stopping


class PeerRecorder(auth_pb2_grpc.AuthServiceServicer):
    """Records the client address (its connection) of each GetJwks."""

    def __init__(self) -> None:
        self.peers: list[str] = []

    async def GetJwks(self, request, context):  # type: ignore[no-untyped-def]
        self.peers.append(context.peer())
        return auth_pb2.Jwks()


def recording_server(token_mint: TokenMint, recorder: PeerRecorder, **config: Any) -> GrpcServer:
    return GrpcServer(
        services=[
            GrpcService(
                SERVICE, lambda s: auth_pb2_grpc.add_AuthServiceServicer_to_server(recorder, s)
            )
        ],
        config=ServerConfig(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1, **config),
        verifier=token_mint.verifier(),
        public_methods=frozenset({f"/{SERVICE}/GetJwks"}),
    )


async def test_a_connection_is_closed_at_its_maximum_age_and_calls_carry_on(
    token_mint: TokenMint,
) -> None:
    """So that a client resolves its target again and finds replicas started since."""
    recorder = PeerRecorder()
    server = recording_server(token_mint, recorder, max_connection_age_seconds=0.5)
    await server.start()
    await server.mark_serving()  # the channel calls only a server that reports SERVING
    try:
        async with create_channel(f"127.0.0.1:{server.bound_port}") as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            deadline = asyncio.get_running_loop().time() + 15
            # every call succeeds, over a second connection once the first one aged out
            while len(set(recorder.peers)) < 2:
                assert asyncio.get_running_loop().time() < deadline, set(recorder.peers)
                await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
                await asyncio.sleep(0.05)
    finally:
        await server.stop()


async def test_a_replica_stopped_under_load_fails_no_call(token_mint: TokenMint) -> None:
    """Calls sent before NOT_SERVING reached the caller are still served: a server that stops
    while calls arrive would cancel them (CANCELLED, which no client retries)."""
    stopped, kept = PeerRecorder(), PeerRecorder()
    servers = [recording_server(token_mint, stopped), recording_server(token_mint, kept)]
    for server in servers:
        await server.start()
        await server.mark_serving()
    target = "ipv4:" + ",".join(f"127.0.0.1:{server.bound_port}" for server in servers)
    codes: collections.Counter[str] = collections.Counter()
    done = asyncio.Event()

    async def call_until_done(stub: auth_pb2_grpc.AuthServiceStub) -> None:
        while not done.is_set():
            try:
                await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=10)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as error:
                codes[error.code().name] += 1

    try:
        async with create_channel(target) as channel:
            stub = auth_pb2_grpc.AuthServiceStub(channel)
            callers = [asyncio.create_task(call_until_done(stub)) for _ in range(64)]
            await eventually(lambda: len(stopped.peers) >= 200, within=30)
            await servers[0].stop()
            answered = len(kept.peers)
            await eventually(lambda: len(kept.peers) >= answered + 200, within=30)
            done.set()
            await asyncio.gather(*callers)
    finally:
        for server in servers:
            await server.stop()
    assert set(codes) == {"OK"}, codes


async def test_a_caller_that_does_not_watch_health_is_served_until_the_turn_away_limit(
    token_mint: TokenMint, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(grpc_server, "TURN_AWAY_LIMIT_SECONDS", 0.5)
    recorder = PeerRecorder()
    server = recording_server(token_mint, recorder)
    await server.start()
    await server.mark_serving()
    done = asyncio.Event()

    async def call_until_stopped(stub: auth_pb2_grpc.AuthServiceStub) -> None:
        with contextlib.suppress(grpc.aio.AioRpcError):  # the calls after the stop fail
            while not done.is_set():
                await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=5)
                await asyncio.sleep(0.01)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            caller = asyncio.create_task(call_until_stopped(auth_pb2_grpc.AuthServiceStub(channel)))
            await eventually(lambda: recorder.peers)
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.wait_for(server.stop(), timeout=5)
            stopping = loop.time() - started
            done.set()
            await caller
    finally:
        await server.stop()
    # served through the limit (a call every 10 ms or so), then stopped
    assert 0.5 <= stopping < 2.5
    assert len(recorder.peers) >= 10


async def test_reflection_lists_the_services(channel: grpc.aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name async for r in responses for s in r.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_public_method_needs_no_token_others_do(
    channel: grpc.aio.Channel, token_mint: TokenMint
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    await stub.GetJwks(auth_pb2.GetJwksRequest())
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(auth_pb2.GetUserRequest(id="whoami"))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetJwks(auth_pb2.GetJwksRequest(), metadata=(("authorization", "Bearer x.y.z"),))
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    token = token_mint.token("user-7")
    me = await stub.GetUser(
        auth_pb2.GetUserRequest(id="whoami"), metadata=(("authorization", f"Bearer {token}"),)
    )
    assert me.id == "user-7"


async def test_service_errors_map_to_statuses_with_details(
    channel: grpc.aio.Channel, token_mint: TokenMint
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    metadata = (("authorization", f"Bearer {token_mint.token('u')}"),)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(auth_pb2.GetUserRequest(id="missing"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(auth_pb2.GetUserRequest(id="bad"), metadata=metadata)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailer = dict(caught.value.trailing_metadata() or ())["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(trailer)
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert bad_request.field_violations[0].field == "id"


async def test_unexpected_errors_are_internal_with_a_correlation_id_only(
    channel: grpc.aio.Channel, token_mint: TokenMint
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(
            auth_pb2.GetUserRequest(id="boom"),
            metadata=(("authorization", f"Bearer {token_mint.token('u')}"),),
        )
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "correlation id" in (caught.value.details() or "")
    assert "hunter2" not in (caught.value.details() or "")


async def test_an_unreachable_database_is_answered_and_counted_unavailable(
    channel: grpc.aio.Channel, token_mint: TokenMint
) -> None:
    stub = auth_pb2_grpc.AuthServiceStub(channel)
    unavailable, internal = handled("GetUser", "UNAVAILABLE"), handled("GetUser", "INTERNAL")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetUser(
            auth_pb2.GetUserRequest(id="database-down"),
            metadata=(("authorization", f"Bearer {token_mint.token('u')}"),),
        )
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    # the metrics say what the caller got
    assert handled("GetUser", "UNAVAILABLE") == unavailable + 1
    assert handled("GetUser", "INTERNAL") == internal


async def test_bytes_that_are_no_message_are_invalid_argument_after_auth(
    channel: grpc.aio.Channel, token_mint: TokenMint
) -> None:
    """grpcio alone answers UNKNOWN quoting the DecodeError; the servicer is never called."""

    def raw(method: str) -> grpc.aio.UnaryUnaryMultiCallable:
        return channel.unary_unary(
            f"/{SERVICE}/{method}",
            request_serializer=lambda data: data,
            response_deserializer=lambda data: data,
        )

    garbage = b"\x0a\xff\xff\xff\xff\x0f"  # a length-delimited field longer than the message
    handled_before = handled("GetUser", "INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await raw("GetUser")(garbage)
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED  # who asks comes first

    token = (("authorization", f"Bearer {token_mint.token('u')}"),)
    for method, metadata in (("GetUser", token), ("GetJwks", ())):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(method)(garbage, metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (
            caught.value.details() == f"the request is not a valid message for /{SERVICE}/{method}"
        )
    assert handled("GetUser", "INVALID_ARGUMENT") == handled_before + 1
    # a well-formed request still goes through
    me = await raw("GetUser")(
        auth_pb2.GetUserRequest(id="whoami").SerializeToString(), metadata=token
    )
    assert auth_pb2.User.FromString(me).id == "u"


def handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": SERVICE, "grpc_method": method, "grpc_code": code},
    )
    return value or 0.0


async def test_with_tracing_on_health_watch_streams_and_calls_are_traced(
    token_mint: TokenMint,
) -> None:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from tienda_platform import telemetry

    class Collected(SpanExporter):
        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def export(self, spans):  # type: ignore[no-untyped-def]
            self.spans.extend(spans)
            return SpanExportResult.SUCCESS

    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    collected = Collected()
    telemetry.record_spans(SimpleSpanProcessor(collected))
    server = new_server(token_mint)
    await server.start()
    try:
        await server.mark_serving()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.bound_port}") as channel:
            watch = health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=SERVICE)
            )
            first = await asyncio.wait_for(watch.read(), timeout=5)
            assert first.status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest())
    finally:
        await server.stop()
    names = [s.name for s in collected.spans]
    assert f"/{SERVICE}/GetJwks" in names
    assert not [n for n in names if "grpc.health" in n]
    # the call's duration carries its trace as an exemplar, in the OpenMetrics exposition
    (handled,) = [s for s in collected.spans if s.name == f"/{SERVICE}/GetJwks"]
    trace_id = format(handled.context.trace_id, "032x")
    assert any(
        line.startswith("grpc_server_handling_seconds_bucket{")
        and 'grpc_method="GetJwks"' in line
        and f'# {{trace_id="{trace_id}"}}' in line
        for line in openmetrics(REGISTRY).decode().splitlines()
    )


@contextlib.contextmanager
def tracing_without_a_receiver() -> Iterator[None]:
    """The process's tracing as configure_tracing leaves it when no exporter is set: spans get
    ids and are propagated, none is recorded."""
    from opentelemetry.sdk.trace import TracerProvider
    from tienda_platform import telemetry

    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert isinstance(provider.sampler, telemetry.QuietSampler)
    recording = provider.sampler.recording
    provider.sampler.recording = False
    try:
        yield
    finally:
        provider.sampler.recording = recording


async def test_without_a_receiver_a_call_still_carries_its_trace_to_the_server(
    token_mint: TokenMint,
) -> None:
    """No span is recorded while nothing receives them, yet the server handles the call in
    the caller's trace (so both services' log lines carry the same trace.id)."""
    from tienda_platform import grpc_client, telemetry

    with tracing_without_a_receiver():
        server = new_server(token_mint)
        await server.start()
        await server.mark_serving()
        try:
            SEEN_CONTEXTS.clear()
            async with grpc_client.create_channel(f"127.0.0.1:{server.bound_port}") as channel:
                with telemetry.tracer.start_as_current_span("request") as request:
                    await auth_pb2_grpc.AuthServiceStub(channel).GetJwks(auth_pb2.GetJwksRequest())
        finally:
            await server.stop()
    caller = request.get_span_context()
    (seen,) = SEEN_CONTEXTS
    assert not request.is_recording()
    assert seen.trace_id == caller.trace_id
    assert seen.span_id not in (0, caller.span_id)  # the server's own span, in that trace
    assert not seen.trace_flags.sampled


async def test_an_error_logged_while_handling_a_call_carries_the_callers_trace_id(
    token_mint: TokenMint,
) -> None:
    from loguru import logger
    from tienda_platform import grpc_client, telemetry
    from tienda_platform.logging import ecs_document

    logged: list[dict[str, Any]] = []
    sink = logger.add(lambda message: logged.append(ecs_document(message.record)), level="ERROR")
    try:
        with tracing_without_a_receiver():
            server = new_server(token_mint)
            await server.start()
            await server.mark_serving()
            try:
                target = f"127.0.0.1:{server.bound_port}"
                async with grpc_client.create_channel(target) as channel:
                    with (
                        telemetry.tracer.start_as_current_span("request") as request,
                        pytest.raises(grpc.aio.AioRpcError) as caught,
                    ):
                        await auth_pb2_grpc.AuthServiceStub(channel).GetUser(
                            auth_pb2.GetUserRequest(id="boom"),
                            metadata=(("authorization", f"Bearer {token_mint.token('u')}"),),
                        )
            finally:
                await server.stop()
    finally:
        logger.remove(sink)
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    (line,) = [doc for doc in logged if doc["message"].startswith("unhandled error in")]
    assert line["trace.id"] == f"{request.get_span_context().trace_id:032x}"
    assert line["error.type"] == "RuntimeError"


async def test_a_service_sets_its_start_up_heap_aside_before_it_reports_serving(
    token_mint: TokenMint,
) -> None:
    server = new_server(token_mint)
    frozen_when_serving: list[int] = []
    serving = asyncio.Event()
    mark_serving = server.mark_serving

    async def observed_mark_serving() -> None:
        frozen_when_serving.append(gc.get_freeze_count())
        await mark_serving()
        serving.set()

    async def prepare() -> None:
        return None

    server.mark_serving = observed_mark_serving  # type: ignore[method-assign]
    thresholds = gc.get_threshold()
    gc.unfreeze()
    running = asyncio.create_task(run_until_signalled(server, prepare=prepare))
    try:
        await asyncio.wait_for(serving.wait(), timeout=10)
        assert frozen_when_serving[0] > 10_000  # the start-up heap: modules, descriptors, ...
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # what run_until_signalled stops on
        await asyncio.wait_for(running, timeout=10)
        gc.unfreeze()
        gc.set_threshold(*thresholds)
