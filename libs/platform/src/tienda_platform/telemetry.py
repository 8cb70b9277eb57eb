"""OpenTelemetry tracing, configured only by the standard OTEL_* variables.

Spans are recorded and exported over OTLP when OTEL_EXPORTER_OTLP_ENDPOINT (or its traces
variant) is set. Without an endpoint nothing would receive them, so none is recorded: every
span still gets its ids and is propagated (so log lines carry trace.id and span.id, the same
across services), but as a non-recording span, marked not sampled, which costs next to
nothing; SQL statements and Redis commands, which could have no span then, are not even
hooked. OTEL_SDK_DISABLED=true turns tracing off entirely.

The spans of SQL statements and Redis commands are tienda_platform.statement_spans's; those of
gRPC calls, tienda_platform.grpc_tracing's (which calls get one) and grpc_spans's (the spans).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from loguru import logger
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import OTELResourceDetector, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    DEFAULT_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    _get_from_env_or_default,  # the SDK's reading of OTEL_TRACES_SAMPLER(_ARG)
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes

from tienda_platform.events import trace_context, traced_context
from tienda_platform.spans import LeanTracerProvider, current_span_context

_configured = False


def tracing_enabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "false").strip().lower() != "true"


def tracing_configured() -> bool:
    """True once configure_tracing installed the SDK in this process."""
    return _configured


# the instrumentations whose spans a service can leave out, by the names of their entry points
# (those opentelemetry-instrument knows them by): the spans of SQL statements and of Redis
# commands. The others (gRPC calls, HTTP requests, events) carry each trace between services.
OPTIONAL_INSTRUMENTATIONS = frozenset({"sqlalchemy", "redis"})


def _named_in_disabled_instrumentations() -> set[str]:
    value = os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "")
    return {name.strip() for name in value.split(",") if name.strip()}


def disabled_instrumentations() -> frozenset[str]:
    """The optional instrumentations OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off, read as
    opentelemetry-instrument reads it: a comma-separated list of entry point names, `*` for
    all of them (here, OPTIONAL_INSTRUMENTATIONS)."""
    named = _named_in_disabled_instrumentations()
    if "*" in named:
        return OPTIONAL_INSTRUMENTATIONS
    return OPTIONAL_INSTRUMENTATIONS & frozenset(named)


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
    ignored = _named_in_disabled_instrumentations() - OPTIONAL_INSTRUMENTATIONS - {"*"}
    if ignored:
        logger.warning(
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names {ignored}: tienda can leave out the "
            "spans of sqlalchemy and redis only, and traces the rest",
            ignored=", ".join(sorted(ignored)),
        )
    # nothing is recorded until something receives the spans (record_spans)
    provider = LeanTracerProvider(resource=resource, sampler=configured_sampler(recording=False))
    trace.set_tracer_provider(provider)
    if exporting():
        record_spans(BatchSpanProcessor(otlp_span_exporter()))


def otlp_span_exporter() -> SpanExporter:
    """The OTLP exporter of the protocol OTEL_EXPORTER_OTLP_TRACES_PROTOCOL (or
    OTEL_EXPORTER_OTLP_PROTOCOL) names, configured by the SDK's own OTEL_EXPORTER_OTLP_*
    variables (endpoint, headers, timeout, compression, certificates):

    - `grpc`, the default: OTLP/gRPC (a collector's port 4317), encoded by
      tienda_platform.otlp's encoder;
    - `http/protobuf`: OTLP/HTTP (port 4318), to OTEL_EXPORTER_OTLP_ENDPOINT + `/v1/traces`,
      or to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as it is;
    - `http/json`, which the Python SDK does not send: warned about, and sent as
      http/protobuf, which the same receivers take on the same port and path."""
    protocol = (
        (
            os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "grpc"
        )
        .strip()
        .lower()
    )
    if protocol.startswith("http/"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpSpanExporter,
        )

        if protocol != "http/protobuf":
            logger.warning(
                "OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: tienda sends spans over OTLP/HTTP as "
                "http/protobuf, which a receiver of OTLP/HTTP takes on the same port and path",
                protocol=protocol,
            )
        return HttpSpanExporter()
    if protocol != "grpc":
        logger.warning(
            "OTEL_EXPORTER_OTLP_PROTOCOL={protocol} is not an OTLP protocol (grpc, "
            "http/protobuf): tienda exports spans over OTLP/gRPC",
            protocol=protocol,
        )
    from tienda_platform.otlp import FastOTLPSpanExporter

    return FastOTLPSpanExporter()


def record_spans(processor: SpanProcessor) -> None:
    """Send the spans of this process to processor, and start recording them (configure_tracing
    does so for the OTLP exporter; tests, for a processor of their own)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        raise RuntimeError("record_spans needs configure_tracing first")
    provider.add_span_processor(processor)
    if isinstance(provider.sampler, QuietSampler):
        provider.sampler.recording = True
    from tienda_platform import statement_spans  # which imports this module

    statement_spans.install()


def configured_sampler(*, recording: bool = True) -> QuietSampler:
    """OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG choose which traces are kept, as usual
    (every trace by default; `parentbased_traceidratio` with 0.1 keeps one in ten, whole);
    background noise is left out whichever they choose (see QuietSampler)."""
    inner = _get_from_env_or_default()
    # each parent-based sampler the variables can name keeps a span whose parent is kept, and
    # drops one whose parent is not
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
        # read by LeanTracer for every span, which then records a kept parent's children,
        # and drops the children of a parent not kept, without asking: attributes, kept up
        # to date here, rather than properties
        self.keeps_children_of_kept_parents = recording and self._follows_kept_parents
        self.drops_children_of_unkept_parents = recording and self._follows_kept_parents

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


class LazyTracer(trace.ProxyTracer):
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


tracer = LazyTracer("tienda")


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
