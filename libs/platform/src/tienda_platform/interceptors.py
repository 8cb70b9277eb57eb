"""gRPC server interceptors: error mapping, authentication and RED metrics for unary RPCs.

A request whose bytes are not a valid message of its type is INVALID_ARGUMENT (grpcio alone
answers UNKNOWN, quoting the Python exception): the innermost wrapper decodes tolerantly, and
the servicer's method is not called for it; authentication and metrics see it as any other
refused call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from loguru import logger
from prometheus_client import Counter, Histogram

from tienda_platform.auth import TokenVerifier, bind_principal
from tienda_platform.database import unreachable
from tienda_platform.errors import InvalidArgument, ServiceError, Unauthenticated
from tienda_platform.ids import new_id
from tienda_platform.metrics import child
from tienda_platform.telemetry import exemplar, set_span_attributes

UnaryHandler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]

GRPC_SERVER_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_SERVER_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time the server took to handle an RPC, by method.",
    ["grpc_service", "grpc_method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


class UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every unary-unary handler in `around`; streaming handlers pass untouched."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary
        method = handler_call_details.method
        deserialize = handler.request_deserializer
        if not getattr(inner, "wraps_a_servicer", False):  # the innermost interceptor
            inner = _refusing_undecodable(inner, method)
            deserialize = _tolerant(deserialize)

        async def wrapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            return await self.around(method, inner, request, context)

        wrapped.wraps_a_servicer = True  # type: ignore[attr-defined]
        return grpc.unary_unary_rpc_method_handler(
            wrapped,
            request_deserializer=deserialize,
            response_serializer=handler.response_serializer,
        )

    async def around(
        self, method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        raise NotImplementedError  # pragma: no cover - abstract


class _Undecodable:
    """Stands for a request whose bytes did not decode (the deserializer cannot refuse)."""


_UNDECODABLE = _Undecodable()


def _tolerant(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def tolerant(data: bytes) -> Any:
        if deserialize is None:
            return data
        try:
            return deserialize(data)
        except DecodeError:
            return _UNDECODABLE

    return tolerant


def _refusing_undecodable(inner: UnaryHandler, method: str) -> UnaryHandler:
    async def refusing(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if request is _UNDECODABLE:
            raise InvalidArgument(f"the request is not a valid message for {method}")
        return await inner(request, context)

    return refusing


def _status_details(error: ServiceError) -> bytes:
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    if isinstance(error, InvalidArgument) and error.violations:
        bad_request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field, description=v.description
                )
                for v in error.violations
            ]
        )
        detail = any_pb2.Any()
        detail.Pack(bad_request)
        status.details.append(detail)
    return status.SerializeToString()


class ErrorMappingInterceptor(UnaryInterceptor):
    """ServiceError → its status with google.rpc details; a database that cannot be reached
    (tienda_platform.database.unreachable: nothing was committed) → UNAVAILABLE, which callers
    retry (the channels of tienda_platform.grpc_client do so by themselves); anything else →
    INTERNAL, logged with its stack trace."""

    async def around(
        self, method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            return await inner(request, context)
        except ServiceError as error:
            await context.abort(
                error.code,
                error.message,
                trailing_metadata=(("grpc-status-details-bin", _status_details(error)),),
            )
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as error:
            if unreachable(error):
                logger.warning(
                    "{method}: the database cannot be reached ({error}); nothing was changed",
                    method=method,
                    error=f"{type(error).__name__}: {str(error).splitlines()[0][:200]}",
                )
                await context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    "the database cannot be reached; nothing was changed, try again",
                )
            correlation_id = new_id()
            logger.opt(exception=True).error(
                "unhandled error in {method}", method=method, correlation_id=correlation_id
            )
            await context.abort(
                grpc.StatusCode.INTERNAL, f"internal error (correlation id {correlation_id})"
            )


class AuthInterceptor(UnaryInterceptor):
    """Verifies `authorization: Bearer <jwt>`; required for every method not in `public_methods`.

    A present but invalid token is refused even on a public method.
    """

    def __init__(self, verifier: TokenVerifier, public_methods: frozenset[str]) -> None:
        self._verifier = verifier
        self._public = public_methods

    async def around(
        self, method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        header = next(
            (str(v) for k, v in (context.invocation_metadata() or ()) if k == "authorization"),
            None,
        )
        if header is None:
            if method not in self._public:
                raise Unauthenticated("missing bearer token")
            return await inner(request, context)
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization must be 'Bearer <token>'")
        principal = await self._verifier.verify(token.strip())
        set_span_attributes(user_id=principal.user_id)
        with bind_principal(principal):
            return await inner(request, context)


class MetricsInterceptor(UnaryInterceptor):
    """RED metrics per RPC: grpc_server_handled_total and grpc_server_handling_seconds."""

    async def around(
        self, method: str, inner: UnaryHandler, request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        _, service, name = method.split("/", 2)
        started = time.perf_counter()
        code = "OK"
        try:
            return await inner(request, context)
        except ServiceError as error:
            code = error.code.name
            raise
        except grpc.aio.AbortError:
            code = context.code().name if context.code() else "UNKNOWN"
            raise
        except Exception as error:  # answered by ErrorMappingInterceptor, outside this one
            code = "UNAVAILABLE" if unreachable(error) else "INTERNAL"
            raise
        finally:
            child(GRPC_SERVER_HANDLED, service, name, code).inc()
            child(GRPC_SERVER_SECONDS, service, name).observe(
                time.perf_counter() - started, exemplar=exemplar()
            )
