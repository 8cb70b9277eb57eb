"""OpenTelemetry tracing, configured only by the standard OTEL_* variables.

Spans are recorded and exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or its traces
variant) is set. Without an endpoint nothing would receive them, so none is recorded: every
span still gets its ids and is propagated (so log lines carry trace.id and span.id, the same
across services), but as a non-recording span, marked not sampled, which costs next to
nothing; SQL statements and Redis commands, which could have no span then, are not even
hooked. OTEL_SDK_DISABLED=true turns tracing off entirely.
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import PurePath
from typing import Any

import grpc
from loguru import logger
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,  # the SDK's reading of OTEL_TRACES_SAMPLER(_ARG)
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from tienda_platform.events import trace_context, traced_context
from tienda_platform.spans import LeanTracerProvider, current_span_context, in_sampled_trace

_configured = False
# whether the SQL and Redis tracing is installed; the engines waiting for it until then
_statements_traced = False
_untraced_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def tracing_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() != "true"


def tracing_configured() -> bool:
    """True once configure_tracing installed the SDK in this process."""
    return _configured


def exporting() -> bool:
    if os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() == "none":
        return False
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing(*, service_name: str, service_version: str, environment: str) -> None:
    """Install the tracer provider and the library instrumentations, once per process."""
    global _configured
    if _configured or not tracing_enabled():
        return
    _configured = True
    # the service's own values, unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES say
    # otherwise (the standard variables win)
    resource = Resource.create(
        {
            "service.name": service_name,
            "service.version": service_version,
            "deployment.environment": environment,
        }
    ).merge(OTELResourceDetector().detect())
    # nothing is recorded until something receives the spans (record_spans)
    provider = LeanTracerProvider(resource=resource, sampler=configured_sampler(recording=False))
    trace.set_tracer_provider(provider)
    if exporting():
        from tienda_platform.otlp import FastOTLPSpanExporter

        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        )
        if protocol and protocol.strip().lower() != "grpc":
            logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: tienda exports spans over OTLP/gRPC "
                "only; point OTEL_EXPORTER_OTLP_ENDPOINT at a gRPC receiver (port 4317)",
                protocol=protocol,
            )

        record_spans(BatchSpanProcessor(FastOTLPSpanExporter()))


def _trace_statements_and_commands() -> None:
    """Install the SQL and Redis tracing, once spans are recorded (record_spans): until then
    no statement or command could have a span, and their hooks would cost every one of them
    (a few microseconds each). Idempotent."""
    global _statements_traced
    if _statements_traced:
        return
    _statements_traced = True
    instrument_redis()
    for engine in list(_untraced_engines):
        StatementTracer(engine)
    _untraced_engines.clear()


def instrument_redis(tracer_provider: trace.TracerProvider | None = None) -> None:
    """The OpenTelemetry Redis instrumentation, with pipelines named as batches
    (name_redis_batches) and commands outside sampled traces left out
    (trace_redis_only_in_sampled_traces); on the global tracer provider unless given one."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(
        tracer_provider=tracer_provider, response_hook=name_redis_batches
    )
    trace_redis_only_in_sampled_traces()


def name_redis_batches(span: trace.Span, instance: Any, _response: Any) -> None:
    """Name a pipeline's span as the database semantic conventions name a batch operation:
    `BATCH XADD` when all its commands are one (the outbox relay's), `BATCH` otherwise; a
    pipeline of one command keeps that command's name. The Redis instrumentation names it
    after every command in it (`XADD XADD XADD ...`): a new name for every batch length in
    Jaeger's list of operations, and a name as long as the batch. Its length stays in
    `db.redis.pipeline_length`. (The instrumentation's response hook, called after each
    command and pipeline while its span is current.)"""
    if not isinstance(instance, _PIPELINES) or not isinstance(span, ReadableSpan):
        return  # a command of the client, or a span that is not recorded
    length = (span.attributes or {}).get("db.redis.pipeline_length")
    if not isinstance(length, int) or length < 2:
        return
    commands = span.name.split(" ")
    # a multi-word command (CLIENT SETINFO) makes more words than commands: a mixed batch
    same = len(commands) == length and len(set(commands)) == 1
    span.update_name(f"BATCH {commands[0]}" if same else "BATCH")


_PIPELINES = (AsyncPipeline, Pipeline)


def trace_redis_only_in_sampled_traces() -> None:
    """Let the Redis instrumentation see only the commands of a sampled trace.

    The others (consumers' XREADGROUP and XACK, the relays' and workers' polling: hundreds a
    second, outside any trace) would get no span: QuietSampler drops a client span outside any
    trace, and a parent-based sampler one under a parent that is not sampled. But the
    instrumentation formats every command's arguments into a statement before asking the
    sampler, which cost more than the traced commands. This layer, over the instrumentation's
    wrappers of redis.asyncio, calls the client directly when the current span is not sampled
    (the rule StatementTracer keeps for SQL). Idempotent."""
    import redis.asyncio.client as client
    from wrapt import FunctionWrapper

    for cls, name in (
        (client.Redis, "execute_command"),
        (client.Pipeline, "execute"),
        (client.Pipeline, "immediate_execute_command"),
    ):
        traced = cls.__dict__[name]
        if isinstance(traced, FunctionWrapper) and traced._self_wrapper is not _when_sampled:
            setattr(cls, name, FunctionWrapper(traced, _when_sampled))


def _when_sampled(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapped: the instrumentation's wrapper (bound); its __wrapped__, the client's method."""
    if in_sampled_trace():
        return wrapped(*args, **kwargs)
    return wrapped.__wrapped__(*args, **kwargs)


def record_spans(processor: SpanProcessor) -> None:
    """Send the spans of this process to processor, and start recording them (configure_tracing
    does so for the OTLP exporter; tests, for a processor of their own)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise RuntimeError("record_spans needs configure_tracing first")
    provider.add_span_processor(processor)
    if isinstance(provider.sampler, QuietSampler):
        provider.sampler.recording = True
    _trace_statements_and_commands()


def configured_sampler(*, recording: bool = True) -> QuietSampler:
    """OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose which traces are kept, as usual
    (every trace by default; `parentbased_traceidratio` with 0.1 keeps one in ten, whole);
    background noise is left out whichever they choose (see QuietSampler)."""
    inner = _get_from_env_or_default()
    # each parent-based sampler the variables can name keeps a span whose parent is kept
    return QuietSampler(
        inner, recording=recording, follows_kept_parents=isinstance(inner, ParentBased)
    )


class QuietSampler(Sampler):
    """The sampler the standard variables choose (by default every trace, whole), except for
    two kinds of span that are noise, each dropped with what runs under it; and nothing at all
    until `recording` is set (record_spans), that is while nothing would receive the spans.

    - A client call outside any trace: the background jobs' polling (consumers' XREADGROUP
      and XAUTOCLAIM every 100 ms, the outbox relay's and the saga worker's look for work).
      Hundreds a second on an idle system, they would bury the traces worth reading and cost
      as much as the traced work; the work they find starts or continues a trace of its own.
    - FastStream's root span for a batch read from a stream (`<stream> create`, a consumer
      span of no trace) and its `process` child, with the batch's XACK under it: each event
      of the batch gets a `<stream> handle <type>` span of its own, in the trace of the
      request that caused the event, and the batch's span would only open a trace of noise.
    """

    def __init__(
        self,
        inner: Sampler = DEFAULT_ON,
        *,
        recording: bool = True,
        follows_kept_parents: bool = False,
    ) -> None:
        self._inner = inner
        self._follows_kept_parents = follows_kept_parents
        self.recording = recording

    @property
    def recording(self) -> bool:
        return self._recording

    @recording.setter
    def recording(self, recording: bool) -> None:
        self._recording = recording
        # read by LeanTracer for every span, which then records a kept parent's children
        # without asking: an attribute, kept up to date here, rather than a property
        self.keeps_children_of_kept_parents = recording and self._follows_kept_parents

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        if not self._recording:
            return _NOT_RECORDED
        parent = trace.get_current_span(parent_context).get_span_context()
        if self._follows_kept_parents and parent.trace_flags.sampled and parent.is_valid:
            # what a parent-based sampler decides under a kept parent, without asking it
            # (most spans are children of kept spans, and the question cost as much again)
            return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, parent.trace_state)
        if kind is SpanKind.CLIENT or kind is SpanKind.CONSUMER:
            outside_any_trace = not parent.is_valid
            if kind is SpanKind.CLIENT and outside_any_trace:
                return SamplingResult(Decision.DROP)
            if kind is SpanKind.CONSUMER and outside_any_trace and name.endswith(" create"):
                return SamplingResult(Decision.DROP)
        return self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"QuietSampler{{{self._inner.get_description()}}}"


_NOT_RECORDED = SamplingResult(Decision.DROP)


def instrument_engine(engine: Any) -> None:
    """A client span for each SQL statement of this SQLAlchemy engine (see StatementTracer),
    from the moment spans are recorded (record_spans, before or after this call)."""
    if not _configured:
        return
    if _statements_traced:
        StatementTracer(engine.sync_engine)
    else:
        _untraced_engines.add(engine.sync_engine)


class StatementTracer:
    """Spans for the statements of one engine, with the attributes the OpenTelemetry
    SQLAlchemy instrumentation gives them (db.system, db.name, db.user, net.peer.name,
    net.peer.port and db.statement), for a fraction of its cost. A span is named as the
    database semantic conventions name it, `<operation> <table>` (`INSERT orders`, `SELECT
    order_summaries`), or `<operation> <database>` for a statement on no table; the
    database of a SQLite file is its name without the folder and suffix (`order`), so the
    names are the same wherever the data folder is.

    That instrumentation's EngineTracer, at every statement, reads the engine's URL into
    attributes again, makes the span current to add nothing under it, and records pool
    checkouts and checkins as metrics that nothing here exports; with dozens of statements
    per order, that was most of what tracing cost. Here the attributes are the engine's,
    computed once, and a statement makes a span only inside a trace that is kept: outside
    any trace QuietSampler would drop it, and under a parent that is not sampled the
    parent-based samplers would.
    """

    def __init__(self, engine: Engine, tracer: trace.Tracer | None = None) -> None:
        # the provider's own tracer (set by record_spans, which makes these): a call less
        # per statement than through the proxy
        self._tracer = tracer or _sql_tracer.resolved()
        url = engine.url
        database = url.database or ""
        if engine.dialect.name == "sqlite":
            database = PurePath(database).stem if database not in ("", ":memory:") else ""
        self._database = database
        self._attributes: dict[str, Any] = {
            key: value
            for key, value in {
                "db.system": engine.dialect.name,
                "db.name": url.database,
                "db.user": url.username,
                "net.peer.name": url.host,
                "net.peer.port": url.port,
            }.items()
            if value
        }
        self._names: dict[str, str] = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._error)

    def _name(self, statement: str) -> str:
        name = self._names.get(statement)
        if name is None:
            text = _LEADING_COMMENT.sub("", statement)
            words = text.split(maxsplit=1)
            operation = words[0].upper() if words else ""
            table = _TABLE.search(text)
            target = table.group(1).strip('"`') if table else self._database
            name = " ".join(part for part in (operation, target) if part)
            if len(self._names) >= 1000:  # statements are few and cached; bound it anyway
                self._names.clear()
            self._names[statement] = name  # keyed by the statement as given
        return name

    def _before(
        self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        if not in_sampled_trace():  # also false outside any trace
            return
        context._tienda_span = self._tracer.start_span(
            self._names.get(statement) or self._name(statement),
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.statement": statement},
        )

    @staticmethod
    def _after(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        span = context.__dict__.pop("_tienda_span", None)
        if span is not None:
            span.end()

    @staticmethod
    def _error(error: ExceptionContext) -> None:
        context = error.execution_context
        span = context.__dict__.pop("_tienda_span", None) if context is not None else None
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, str(error.original_exception)))
            span.end()


_LEADING_COMMENT = re.compile(r"^\s*/\*.*?\*/")
# the table a statement names first: INSERT INTO t, UPDATE t, DELETE FROM t, SELECT ... FROM t,
# CREATE TABLE t (a name, possibly quoted; a subquery's "FROM (" names none)
_TABLE = re.compile(
    r"\b(?:INTO|UPDATE|FROM|TABLE|JOIN)\s+((?:\"[^\"]+\"|`[^`]+`|\w+))", re.IGNORECASE
)


def _traced(details: Any) -> bool:
    """Probes and reflection are not traced: they are noise in Jaeger, and the instrumentation
    expects streaming handlers to be async generators, which Health/Watch is not (it writes
    through the context), so wrapping it would break the stream."""
    return not details.method.startswith(("/grpc.health.v1.Health/", "/grpc.reflection."))


def server_interceptors() -> list[Any]:
    if not _configured:
        return []
    from tienda_platform.grpc_spans import ServerCallSpans

    return [ServerSpansInKeptTraces(ServerCallSpans(filter_=_traced))]


def client_interceptors() -> list[Any]:
    if not _configured:
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

    from tienda_platform.grpc_spans import ClientCallSpans

    # unary calls get ClientCallSpans; streams, which tienda does not make, the instrumentation
    return [
        ClientSpansInKeptTraces(ClientCallSpans()),
        *(
            interceptor
            for interceptor in aio_client_interceptors()
            if not isinstance(interceptor, grpc.aio.UnaryUnaryClientInterceptor)
        ),
    ]


class ClientSpansInKeptTraces(grpc.aio.UnaryUnaryClientInterceptor):
    """The gRPC instrumentation's client interceptor, for the calls made in a trace that is
    kept (or outside any trace, where QuietSampler decides); a call in a trace that is not
    kept only carries that trace on, in its metadata.

    Under a parent that is not sampled, the parent-based samplers drop the client span
    anyway (the rule StatementTracer and the Redis layer keep), but the instrumentation
    still starts it, makes it current, copies the metadata and awaits the call's code and
    details: per call, more than the span itself would cost. With one trace in ten kept,
    as production runs, that is nine calls in ten."""

    def __init__(self, traced: grpc.aio.UnaryUnaryClientInterceptor) -> None:
        self._traced = traced

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        current = current_span_context()
        if current.trace_flags.sampled or not current.is_valid:
            return await self._traced.intercept_unary_unary(
                continuation, client_call_details, request
            )
        carrier: dict[str, str] = {}
        inject(carrier)
        metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *carrier.items())
        return await continuation(client_call_details._replace(metadata=metadata), request)


class ServerSpansInKeptTraces(grpc.aio.ServerInterceptor):
    """The gRPC instrumentation's server interceptor, for the calls that arrive in a trace
    that is kept, or in none (the sampler decides); a unary call that arrives in a trace that
    is not kept runs in that trace, under a span of its own that is not recorded (so that
    its log lines carry the caller's trace.id and a span.id of the server's), without the
    instrumentation's wrappers: the parent-based samplers would not record its span."""

    def __init__(self, traced: grpc.aio.ServerInterceptor) -> None:
        self._traced = traced

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        parent = _unkept_parent(handler_call_details.invocation_metadata)
        if parent is None:
            return await self._traced.intercept_service(continuation, handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None or not _traced(handler_call_details):
            return handler
        if handler.unary_unary is None:  # a stream: the traced interceptor's
            from tienda_platform.grpc_spans import intercept_found

            return await intercept_found(self._traced, handler, handler_call_details)
        behavior = handler.unary_unary

        async def in_callers_trace(request: Any, context: grpc.aio.ServicerContext) -> Any:
            token = otel_context.attach(parent)
            try:
                return await behavior(request, context)
            finally:
                otel_context.detach(token)

        return grpc.unary_unary_rpc_method_handler(
            in_callers_trace,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


def _unkept_parent(metadata: Sequence[tuple[str, Any]] | None) -> Context | None:
    """The context to handle a call in when its metadata carries a trace that is not kept:
    that trace, with a new span of the server's that is not recorded; None otherwise."""
    carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
    if not _not_sampled(carrier.get("traceparent", "")):
        return None  # the instrumentation takes the call (and reads its context itself)
    remote = extract(carrier)
    caller = trace.get_current_span(remote).get_span_context()
    if not caller.is_valid:  # its flags were read above
        return None
    provider = trace.get_tracer_provider()
    ids = provider.id_generator if isinstance(provider, TracerProvider) else _RANDOM_IDS
    span = NonRecordingSpan(
        SpanContext(
            caller.trace_id,
            ids.generate_span_id(),
            is_remote=False,
            trace_flags=caller.trace_flags,
            trace_state=caller.trace_state,
        )
    )
    return trace.set_span_in_context(span, remote)


def _not_sampled(traceparent: str) -> bool:
    """Whether a W3C traceparent's flags say not sampled (the propagator then checks all
    of it); False for none, or flags that are not hex."""
    fields = traceparent.split("-")
    try:
        return len(fields) >= 4 and not int(fields[3], 16) & 1
    except ValueError:
        return False


_RANDOM_IDS = RandomIdGenerator()


def exemplar() -> dict[str, str] | None:
    """The exemplar of a histogram observation made in a sampled trace: its trace id, under
    the label Grafana's Prometheus data source links to Jaeger with (`trace_id`); None
    outside one (a trace that is not kept has nothing to open)."""
    context = current_span_context()
    if not context.trace_flags.sampled:
        return None
    return {"trace_id": format(context.trace_id, "032x")}


def set_span_attributes(**attributes: str) -> None:
    """Business ids on the current span (order.id, product.id, user.id); never secrets."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k.replace("_", "."): v for k, v in attributes.items() if v})


class _Tracer(trace.ProxyTracer):
    """The tracer `trace.get_tracer` gives before the provider is set: it finds the
    provider's own tracer at first use. Its start_as_current_span hands over that tracer's
    context manager, where the ProxyTracer's wraps it in a generator of its own (for
    nothing but a few microseconds a span), and both methods read the tracer once found
    without the ProxyTracer's property."""

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return (self._real_tracer or self._tracer).start_as_current_span(*args, **kwargs)

    def start_span(self, *args: Any, **kwargs: Any) -> Any:
        return (self._real_tracer or self._tracer).start_span(*args, **kwargs)

    def resolved(self) -> trace.Tracer:
        """The provider's own tracer once a provider is set; this proxy until then."""
        real = self._tracer  # finds the provider's tracer, if there is a provider
        return real if real is self._real_tracer else self


tracer = _Tracer("tienda")
_sql_tracer = _Tracer("tienda.sql")


def current_traceparent() -> str:
    """The W3C traceparent of the current span ("" outside any trace), to keep with
    work done later (a saga step, a webhook delivery, an email) so that it joins the trace
    of the request or event that caused it."""
    return trace_context().get("traceparent", "")


@contextmanager
def span_in_trace(name: str, traceparent: str, **attributes: str) -> Iterator[None]:
    """A span for deferred work, a child of the span `traceparent` names (a new trace
    without one); business ids as attributes (`order_id` becomes `order.id`)."""
    # without one (or with a malformed one) an empty context: a background loop's current
    # context is no parent
    with tracer.start_as_current_span(
        name,
        context=traced_context(traceparent),
        attributes={k.replace("_", "."): v for k, v in attributes.items() if v},
    ):
        yield
