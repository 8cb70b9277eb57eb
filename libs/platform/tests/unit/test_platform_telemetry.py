"""The sampler keeps traces whole and leaves out background noise."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
import redis.asyncio as redis
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.propagate import inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind
from tienda_platform.otlp import FastOTLPSpanExporter
from tienda_platform.statement_spans import name_redis_batches
from tienda_platform.telemetry import QuietSampler, configured_sampler, otlp_span_exporter

pytestmark = pytest.mark.unit


def test_client_calls_outside_a_trace_are_left_out() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=QuietSampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT):
        pass  # a consumer polling, outside any trace
    with tracer.start_as_current_span("SELECT order.db", kind=SpanKind.CLIENT):
        pass  # the outbox relay looking for work
    with tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("INSERT order.db", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span(
            "/product.v1.ProductService/ReserveStock", kind=SpanKind.CLIENT
        ):
            pass
    with tracer.start_as_current_span("outbox relay order.created", kind=SpanKind.PRODUCER):
        pass  # any span that is not a client call still starts a trace

    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "/product.v1.ProductService/ReserveStock",
        "INSERT order.db",
        "POST /v1/orders",
        "outbox relay order.created",
    ]


def test_a_batch_read_from_a_stream_opens_no_trace_of_its_own() -> None:
    """FastStream's spans for a batch (a root `create`, its `process`, the XACK under it)
    are left out; each event's own span, in its request's trace, is kept."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=QuietSampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    batch = tracer.start_span("tienda.order.events create", kind=SpanKind.CONSUMER)
    batch.end()
    with (
        tracer.start_as_current_span(
            "tienda.order.events process",
            context=trace.set_span_in_context(batch),
            kind=SpanKind.CONSUMER,
        ),
        tracer.start_as_current_span("XACK", kind=SpanKind.CLIENT),
    ):
        pass
    with tracer.start_as_current_span("outbox relay order.created", kind=SpanKind.PRODUCER):
        # a message created inside a trace keeps FastStream's create span
        with tracer.start_as_current_span("tienda.order.events create", kind=SpanKind.PRODUCER):
            pass
        with tracer.start_as_current_span(
            "tienda.order.events handle order.created", kind=SpanKind.CONSUMER
        ):
            pass

    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "outbox relay order.created",
        "tienda.order.events create",
        "tienda.order.events handle order.created",
    ]


class SeededIds(IdGenerator):
    """Random ids, the same in every run."""

    def __init__(self) -> None:
        self._random = random.Random(7)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64)

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128)


def test_the_standard_variables_choose_the_share_of_traces_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=configured_sampler(), id_generator=SeededIds())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    for _ in range(2000):
        with (
            tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER),
            tracer.start_as_current_span("INSERT order.db", kind=SpanKind.CLIENT),
        ):
            pass
        with tracer.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT):
            pass  # noise is still left out

    spans = exporter.get_finished_spans()
    requests = [s for s in spans if s.name == "POST /v1/orders"]
    # a ratio sampler keeps the trace ids below a bound: about 25% of them
    assert 450 <= len(requests) <= 550
    # traces are kept whole: each kept request has its statement, and nothing else is kept
    statements = [s for s in spans if s.name == "INSERT order.db"]
    assert {s.parent.span_id for s in statements if s.parent} == {
        r.context.span_id for r in requests
    }
    assert len(spans) == 2 * len(requests)


def test_until_something_receives_spans_none_is_recorded_yet_each_has_its_ids() -> None:
    """Without an exporter (record_spans not called) spans cost next to nothing, and log
    lines still carry trace.id and span.id, the same down the call chain."""
    exporter = InMemorySpanExporter()
    sampler = QuietSampler(recording=False)
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER) as request:
        carrier: dict[str, str] = {}
        inject(carrier)
        with tracer.start_as_current_span("INSERT order.db", kind=SpanKind.CLIENT) as statement:
            pass
    outer, inner = request.get_span_context(), statement.get_span_context()
    assert not request.is_recording() and not statement.is_recording()
    assert outer.is_valid and inner.is_valid
    assert inner.trace_id == outer.trace_id and inner.span_id != outer.span_id
    # propagated as not sampled, so the next service does not record it either
    _, trace_id, parent_id, flags = carrier["traceparent"].split("-")
    assert (trace_id, parent_id) == (f"{outer.trace_id:032x}", f"{outer.span_id:016x}")
    assert int(flags, 16) & 0x01 == 0
    assert exporter.get_finished_spans() == ()

    sampler.recording = True  # what record_spans does
    with tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["POST /v1/orders"]


@pytest.mark.parametrize(("endpoint", "recording"), [("", False), ("http://127.0.0.1:4317", True)])
def test_configure_tracing_records_spans_only_with_an_exporter(
    endpoint: str, recording: bool
) -> None:
    """Without OTEL_EXPORTER_OTLP_ENDPOINT nothing would receive spans: none is recorded, but
    spans still get ids; with it, spans are recorded as LeanSpans. Either way `telemetry.tracer`
    hands over the provider's own `start_as_current_span` context manager. (A process of its
    own: the tracer provider is set once per process.)"""
    script = """
from opentelemetry import trace
from tienda_platform import telemetry
telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
with telemetry.tracer.start_as_current_span("request") as span:
    context = span.get_span_context()
    recording = trace.get_tracer_provider().sampler.recording
    print(recording, span.is_recording(), context.is_valid, type(span).__name__)
# the provider's own context manager, not wrapped in a proxy's generator
print(type(telemetry.tracer.start_as_current_span("next")).__name__)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "60000",
        # nothing listens there: the span flushed at exit gives up after a second
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    kind = "LeanSpan" if recording else "NonRecordingSpan"  # see tienda_platform.spans
    assert done.stdout.split() == [str(recording), str(recording), "True", kind, "CurrentSpan"]
    if not endpoint:  # nothing exported, and nothing said about it either
        assert done.stderr == ""


def test_statements_and_redis_commands_are_hooked_only_once_spans_are_recorded() -> None:
    """Until spans are recorded no statement or Redis command could have one: neither the
    engines nor the Redis client are hooked (a hook costs every statement and command).
    record_spans hooks them, engines made before it as well as after. (A process of its
    own: the tracer provider and the Redis instrumentation are set once per process.)"""
    script = """
import asyncio
import redis.asyncio.client as client
import sqlalchemy as sa
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy.ext.asyncio import create_async_engine
from wrapt import FunctionWrapper
from tienda_platform import statement_spans, telemetry

def hooks(engine):
    return len(engine.sync_engine.dispatch.before_cursor_execute)

def redis_hooked():
    return isinstance(client.Redis.__dict__["execute_command"], FunctionWrapper)

async def main():
    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    before = create_async_engine("sqlite+aiosqlite://")
    statement_spans.instrument_engine(before)
    print(hooks(before), redis_hooked())
    recorded = InMemorySpanExporter()
    telemetry.record_spans(SimpleSpanProcessor(recorded))
    telemetry.record_spans(SimpleSpanProcessor(InMemorySpanExporter()))  # hooks them once
    after = create_async_engine("sqlite+aiosqlite://")
    statement_spans.instrument_engine(after)
    print(hooks(before), hooks(after), redis_hooked())
    with telemetry.tracer.start_as_current_span("request"):
        for engine in (before, after):
            async with engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
    print(sorted(span.name for span in recorded.get_finished_spans()))

asyncio.run(main())
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "0 False",
        "1 1 True",
        "['SELECT', 'SELECT', 'request']",
    ]


def _configured_in_a_process(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = """
import json
from opentelemetry import trace
from tienda_platform import telemetry
telemetry.configure_tracing(service_name="svc", service_version="1.2.3", environment="test")
print(json.dumps(dict(trace.get_tracer_provider().resource.attributes)))
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        env=clean | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_standard_variables_override_the_services_resource_attributes() -> None:
    import json

    own = json.loads(_configured_in_a_process({}).stdout)
    assert (own["service.name"], own["service.version"], own["deployment.environment"]) == (
        "svc",
        "1.2.3",
        "test",
    )
    done = _configured_in_a_process(
        {
            "OTEL_SERVICE_NAME": "svc-eu",
            "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=staging,service.version=9,team=shop",
        }
    )
    told = json.loads(done.stdout)
    assert (told["service.name"], told["service.version"], told["deployment.environment"]) == (
        "svc-eu",
        "9",
        "staging",
    )
    assert told["team"] == "shop"


EXPORTERS = {"grpc": GrpcSpanExporter, "http": HttpSpanExporter}


@pytest.mark.parametrize(
    ("protocol", "exporter", "warning"),
    [
        ("", "grpc", ""),
        ("grpc", "grpc", ""),
        ("http/protobuf", "http", ""),
        (" HTTP/Protobuf ", "http", ""),
        ("http/json", "http", "as http/protobuf"),
        ("thrift", "grpc", "is not an OTLP protocol"),
    ],
)
def test_the_otlp_protocol_variable_chooses_the_exporter(
    monkeypatch: pytest.MonkeyPatch, protocol: str, exporter: str, warning: str
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL, as the SDK reads it; what it cannot send is said once,
    at start."""
    from loguru import logger

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    said: list[str] = []
    sink = logger.add(said.append, level="WARNING", format="{message}")
    try:
        chosen = otlp_span_exporter()
    finally:
        logger.remove(sink)
    chosen.shutdown()
    assert isinstance(chosen, EXPORTERS[exporter])
    if exporter == "grpc":
        assert isinstance(chosen, FastOTLPSpanExporter)
    assert (warning in "".join(said)) if warning else said == []


def test_the_traces_protocol_variable_wins_over_the_general_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4318/v1/traces")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")
    chosen = otlp_span_exporter()
    chosen.shutdown()
    assert isinstance(chosen, EXPORTERS["http"])


@pytest.mark.parametrize(
    ("sampler", "argument"),
    [
        ("parentbased_always_on", ""),
        ("parentbased_always_off", ""),
        ("parentbased_traceidratio", "0"),
        ("always_off", ""),
        ("traceidratio", "0"),
    ],
)
def test_under_a_kept_parent_the_decision_is_the_standard_samplers(
    monkeypatch: pytest.MonkeyPatch, sampler: str, argument: str
) -> None:
    """configured_sampler answers a child of a kept span itself when the variables name a
    parent-based sampler: its decision, attributes and trace state are the ones the SDK's
    sampler gives, for each sampler the variables can name."""
    from opentelemetry.sdk.trace.sampling import _get_from_env_or_default
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
    from opentelemetry.trace.span import TraceState

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", sampler)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", argument)
    ours, standard = configured_sampler(), _get_from_env_or_default()
    for flags in (TraceFlags.SAMPLED, TraceFlags.DEFAULT):
        for remote in (True, False):
            parent = trace.set_span_in_context(
                NonRecordingSpan(
                    SpanContext(
                        trace_id=0x1234,
                        span_id=0x99,
                        is_remote=remote,
                        trace_flags=TraceFlags(flags),
                        trace_state=TraceState([("vendor", "x")]),
                    )
                )
            )
            for kind in (SpanKind.CLIENT, SpanKind.SERVER, SpanKind.INTERNAL):
                args = (parent, 0x1234, "span", kind, {"db.system": "sqlite"})
                got, want = ours.should_sample(*args), standard.should_sample(*args)
                assert got.decision == want.decision, (flags, remote, kind)
                assert dict(got.attributes) == dict(want.attributes)
                assert got.trace_state == want.trace_state


@pytest.mark.parametrize(
    ("name", "length", "named"),
    [
        ("XADD XADD XADD", 3, "BATCH XADD"),  # the outbox relay's round trip
        ("GET INCRBY", 2, "BATCH"),
        ("CLIENT SETINFO XADD", 2, "BATCH"),  # a command of two words: still mixed
        ("XADD", 1, "XADD"),  # one command is not a batch
    ],
)
def test_a_redis_pipeline_is_named_as_a_batch(name: str, length: int, named: str) -> None:
    provider = TracerProvider()
    client = redis.Redis()  # nothing is sent: a pipeline connects when it executes
    span = provider.get_tracer("t").start_span(
        name, kind=SpanKind.CLIENT, attributes={"db.redis.pipeline_length": length}
    )
    name_redis_batches(span, client.pipeline(), [])
    assert span.name == named  # type: ignore[attr-defined]
    single = provider.get_tracer("t").start_span("XADD XADD")
    name_redis_batches(single, client, [])  # a command of the client, not of a pipeline
    assert single.name == "XADD XADD"  # type: ignore[attr-defined]
