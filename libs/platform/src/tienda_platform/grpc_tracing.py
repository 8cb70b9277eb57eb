"""Which gRPC calls get spans: the unary calls of the traces that are kept.

`server_interceptors` and `client_interceptors` give the layers every server and channel
adds (tienda_platform.grpc_server and grpc_client): the spans themselves are
tienda_platform.grpc_spans's, under a layer that spares them the calls of a trace that is
not kept, which carry the trace on without a span recorded.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext

from tienda_platform.grpc_spans import ClientCallSpans, ServerCallSpans, intercept_found
from tienda_platform.spans import current_span_context
from tienda_platform.telemetry import tracing_configured


def _traced(details: Any) -> bool:
    """Probes and reflection are not traced: they are noise in Jaeger, and the instrumentation
    expects streaming handlers to be async generators, which Health/Watch is not (it writes
    through the context), so wrapping it would break the stream."""
    return not details.method.startswith(("/grpc.health.v1.Health/", "/grpc.reflection."))


def server_interceptors() -> list[Any]:
    """The server span layers of every service's gRPC server (none without tracing)."""
    if not tracing_configured():
        return []
    return [ServerSpansInKeptTraces(ServerCallSpans(filter_=_traced))]


def client_interceptors() -> list[Any]:
    """The client span layers of every gRPC channel (none without tracing)."""
    if not tracing_configured():
        return []
    from opentelemetry.instrumentation.grpc import aio_client_interceptors

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
    """The client span layer it is given (ClientCallSpans), for the calls made in a trace
    that is kept (or outside any trace, where QuietSampler decides); a call in a trace that
    is not kept only carries that trace on, in its metadata.

    Under a parent that is not sampled, the parent-based samplers drop the client span
    anyway (the rule StatementTracer and the Redis layer keep), but the layer would still
    start it, make it current and copy the metadata: per call, more than carrying the trace
    on costs. With one trace in ten kept, as production runs, that is nine calls in ten."""

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
    """The server span layer it is given (ServerCallSpans), for the calls that arrive in a
    trace that is kept, or in none (the sampler decides); a unary call that arrives in a
    trace that is not kept runs in that trace, under a span of its own that is not recorded
    (so that its log lines carry the caller's trace.id and a span.id of the server's),
    without the layer: the parent-based samplers would not record its span."""

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
        return None  # the span layer takes the call (and reads its context itself)
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
