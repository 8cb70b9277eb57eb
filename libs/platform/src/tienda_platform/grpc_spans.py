"""Server and client spans for every unary gRPC call: the spans the gRPC instrumentation's
aio interceptors make, for a fraction of their cost.

`ServerCallSpans` records, for each unary call it lets through its filter, what
opentelemetry-instrumentation-grpc's OpenTelemetryAioServerInterceptor records: a SERVER span
named after the full method, in the caller's trace (read from the call's metadata by the
configured propagators, whose baggage is current while the call runs), with rpc.system,
rpc.service, rpc.method, rpc.grpc.status_code, rpc.user_agent, net.peer.ip, net.peer.port
and net.peer.name ("localhost" for a loopback peer); the status the call ends with (set by
`abort` or `set_code` and `set_details`), as that interceptor maps it (ERROR for UNKNOWN,
DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE and DATA_LOSS); and an exception that
leaves the handler, recorded as there (twice, but for a bare `Exception`: once by the
interceptor, once by the span's block).

That interceptor, at every call, wraps the servicer context in a wrapt proxy to see the
status as it is set, enters two generator-based context managers, reads the metadata twice
and parses the peer address again. ServerCallSpans reads the status from the context once
the handler is done (`code()` and `details()`: what `abort` and `set_code` left there), and
keeps each method's and each peer's attributes. Streaming calls (none of tienda's own: only
the health service's Watch, which the services leave untraced) go to that interceptor.

`ClientCallSpans` records what the instrumentation's UnaryUnaryAioClientInterceptor records:
a CLIENT span named after the full method, current while the call runs, with rpc.system,
rpc.service, rpc.method and rpc.grpc.status_code, and an ERROR status with the status's
details when the call fails; the configured propagators write the trace into the call's
metadata. That interceptor learns how the call ended by awaiting the call's `code()` and
`details()`, two round trips through grpc.aio's interceptor machinery, and ends the span in
a done callback; ClientCallSpans awaits the answer once (which the caller's await then reads
again, as the metrics interceptor does), and reads a failure's status from its AioRpcError.
It ends the span of a call that is cancelled while it waits, which the instrumentation's
leaves open (never exported). Streaming calls are the instrumentation's.

libs/platform/tests/unit/test_platform_grpc_spans.py makes the same calls, on a real server,
through both and compares the spans.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import grpc
from loguru import logger
from opentelemetry import context as context_api
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled
from opentelemetry.propagate import extract, inject
from opentelemetry.propagators.textmap import Setter
from opentelemetry.trace import Status, StatusCode

_OK = grpc.StatusCode.OK
# the codes the instrumentation reports as the server's failure (the others are the caller's)
_SERVER_ERRORS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)
_CACHED = 1024  # methods and peers remembered (a few of each in practice); bounded anyway


class ServerCallSpans(grpc.aio.ServerInterceptor):
    """See the module's docstring."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        filter_: Callable[[grpc.HandlerCallDetails], bool] | None = None,
    ) -> None:
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)
        self._filter = filter_
        self._streams = aio_server_interceptor(tracer_provider=tracer_provider, filter_=filter_)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        if not is_instrumentation_enabled() or (
            self._filter is not None and not self._filter(handler_call_details)
        ):
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is None:  # a stream: the instrumentation's
            return await intercept_found(self._streams, handler, handler_call_details)
        behavior = handler.unary_unary
        method: str = handler_call_details.method
        tracer = self._tracer
        method_attributes = _method_attributes(method)

        async def traced(request: Any, context: grpc.aio.ServicerContext) -> Any:
            metadata = context.invocation_metadata()
            carrier = dict(metadata) if metadata else {}
            parent = extract(carrier) if metadata else None
            attributes = dict(method_attributes)
            user_agent = carrier.get("user-agent")
            if user_agent is not None:
                attributes["rpc.user_agent"] = user_agent
            attributes.update(_peer_attributes(context.peer()))
            span = tracer.start_span(
                method,
                context=parent,
                kind=trace.SpanKind.SERVER,
                attributes=attributes,
                set_status_on_exception=False,
            )
            token = context_api.attach(trace.set_span_in_context(span, parent))
            aborted = False
            try:
                return await behavior(request, context)
            except Exception as error:
                aborted = isinstance(error, grpc.aio.AbortError)
                if span.is_recording():
                    if type(error) is not Exception:
                        span.record_exception(error)  # by the instrumentation's interceptor
                    span.record_exception(error)  # by its span's block
                raise
            finally:
                context_api.detach(token)
                _end_status(span, context, aborted=aborted)
                span.end()

        return grpc.unary_unary_rpc_method_handler(
            traced,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


@lru_cache(maxsize=_CACHED)
def _method_attributes(method: str) -> dict[str, Any]:
    """A call's attributes that come from its method (shared: copied by the spans)."""
    attributes: dict[str, Any] = {"rpc.system": "grpc", "rpc.grpc.status_code": _OK.value[0]}
    if method:
        service, name = method.lstrip("/").split("/", 1)
        attributes["rpc.method"] = name
        attributes["rpc.service"] = service
    return attributes


@lru_cache(maxsize=_CACHED)
def _peer_attributes(peer: str) -> dict[str, Any]:
    """A call's attributes that come from its peer, as the instrumentation parses it:
    "ipv4:127.0.0.1:57284", "ipv6:%5B::1%5D:57284", "ipv4:10.2.1.1:57284,127.0.0.1:57284"."""
    if peer.startswith("unix:"):
        return {}
    try:
        ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
    except (IndexError, ValueError):
        logger.warning("Failed to parse peer address '{peer}'", peer=peer)
        return {}
    ip = unquote(ip)
    attributes = {"net.peer.ip": ip, "net.peer.port": port}
    if ip in ("[::1]", "127.0.0.1"):
        attributes["net.peer.name"] = "localhost"
    return attributes


async def intercept_found(
    interceptor: grpc.aio.ServerInterceptor,
    handler: grpc.RpcMethodHandler,
    handler_call_details: grpc.HandlerCallDetails,
) -> grpc.RpcMethodHandler:
    """What `interceptor` makes of a call whose handler was found already (the continuation
    awaited once, which an interceptor may not do twice)."""

    async def found(_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        return handler

    return await interceptor.intercept_service(found, handler_call_details)


def _server_status(code: grpc.StatusCode, details: str) -> Status:
    if code in _SERVER_ERRORS:
        return Status(StatusCode.ERROR, f"{code}:{details}")
    return Status(StatusCode.UNSET, "")


class _LowercaseKeys(Setter[grpc.aio.Metadata]):
    """gRPC metadata keys are lowercase."""

    def set(self, carrier: grpc.aio.Metadata, key: str, value: str) -> None:
        carrier[key.lower()] = value


_metadata_setter = _LowercaseKeys()


def _end_status(span: trace.Span, context: grpc.aio.ServicerContext, *, aborted: bool) -> None:
    """The status code (and ERROR status) the call ends with, as the instrumentation's
    context wrapper records it when `abort` or `set_code` is called."""
    code = context.code()
    if code is None or not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    details = context.details()
    if aborted:
        span.set_status(_server_status(code, details))
    elif code != _OK:
        span.set_status(_server_status(code, details or code.value[1]))


class ClientCallSpans(grpc.aio.UnaryUnaryClientInterceptor):
    """See the module's docstring."""

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._tracer = trace.get_tracer(__name__, tracer_provider=tracer_provider)

    async def intercept_unary_unary(
        self, continuation: Callable[..., Any], client_call_details: Any, request: Any
    ) -> Any:
        if not is_instrumentation_enabled():
            return await continuation(client_call_details, request)
        method = client_call_details.method
        if isinstance(method, bytes):  # grpc gives bytes (grpc/grpc#31092)
            method = method.decode()
        span = self._tracer.start_span(
            method,
            kind=trace.SpanKind.CLIENT,
            attributes=_method_attributes(method),
            record_exception=False,
            set_status_on_exception=False,
        )
        token = context_api.attach(trace.set_span_in_context(span))
        try:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()))
            inject(metadata, setter=_metadata_setter)
            details = grpc.aio.ClientCallDetails(
                client_call_details.method,
                client_call_details.timeout,
                metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
            )
            try:
                call = await continuation(details, request)
            except grpc.aio.AioRpcError as error:  # as the instrumentation records it
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                span.record_exception(error)
                raise
            try:
                await call  # the answer, read again by the caller's await
            except grpc.aio.AioRpcError as error:
                span.set_attribute("rpc.grpc.status_code", error.code().value[0])
                span.set_status(Status(StatusCode.ERROR, error.details()))
            return call
        finally:
            context_api.detach(token)
            span.end()
