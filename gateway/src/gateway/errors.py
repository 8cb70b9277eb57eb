"""The REST error shape `{"code", "message", "details"}` and how gRPC statuses map onto it.

Upstream messages are passed on only where a server wrote them: a transport failure's text
names internal addresses, so it is replaced by a generic message. Server-side failures
(UNKNOWN, INTERNAL, DATA_LOSS) become a 500 with a correlation id; the real error is logged.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from loguru import logger
from starlette.responses import Response
from tienda_platform.ids import new_id

from gateway.breaker import CircuitOpen

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

# Codes whose message only ever comes from a service's own code, never from the transport.
_CLIENT_ERRORS = frozenset(
    {
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.ABORTED,
    }
)
_GENERIC_MESSAGE = {
    grpc.StatusCode.CANCELLED: "the request was cancelled",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource exhausted",
    grpc.StatusCode.UNIMPLEMENTED: "not implemented",
    grpc.StatusCode.UNAVAILABLE: "the service is unavailable, try again later",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the service did not answer in time",
}
STATUS_DETAILS_KEY = "grpc-status-details-bin"
REQUEST_INFO_TYPE = "type.googleapis.com/google.rpc.RequestInfo"
MAX_MESSAGE_CHARS = 300
_LONG_WORD = re.compile(r"\S{65,}")


def clip(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Text safe to echo: one line, no very long token, at most `limit` characters."""
    line = text.strip().splitlines()[0] if text.strip() else ""
    line = _LONG_WORD.sub(lambda m: m.group()[:32] + "...", line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


class ApiError(Exception):
    """An error answered in the REST error shape."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        details: Sequence[Mapping[str, Any]] = (),
        http_status: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = list(details)
        self.http_status = http_status or HTTP_STATUS.get(code, 500)
        self.headers = dict(headers or {})
        if code is grpc.StatusCode.UNAUTHENTICATED:
            self.headers.setdefault("WWW-Authenticate", "Bearer")

    def body(self) -> dict[str, Any]:
        return {"code": self.code.value[0], "message": self.message, "details": self.details}

    def response(self) -> Response:
        """The JSON response for this error."""
        text = json.dumps(self.body(), ensure_ascii=False, separators=(",", ":"))
        return Response(
            # a message quoting a client's lone surrogate is escaped, not an encoding error
            text.encode("utf-8", "backslashreplace"),
            status_code=self.http_status,
            headers=self.headers,
            media_type="application/json",
        )


def invalid_argument(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, clip(message))


def internal_error(correlation_id: str) -> ApiError:
    """The generic 500: a correlation id to quote, nothing else about the failure."""
    return ApiError(
        grpc.StatusCode.INTERNAL,
        f"internal error (correlation id {correlation_id})",
        details=[{"@type": REQUEST_INFO_TYPE, "request_id": correlation_id}],
        headers={"X-Correlation-Id": correlation_id},
    )


def from_rpc_error(error: grpc.aio.AioRpcError, *, rpc: str) -> ApiError:
    """The REST error for a failed upstream call."""
    code = error.code()
    trailers = error.trailing_metadata() or ()
    raw_status = next((v for k, v in trailers if k == STATUS_DETAILS_KEY), None)
    if code not in HTTP_STATUS or code is grpc.StatusCode.OK:
        correlation_id = new_id()
        logger.error(
            "upstream {rpc} failed with {grpc_code}: {upstream_message}",
            rpc=rpc,
            grpc_code=code.name,
            upstream_message=clip(error.details() or "", 2000),
            correlation_id=correlation_id,
        )
        return internal_error(correlation_id)
    if code in _CLIENT_ERRORS or isinstance(raw_status, bytes):
        message = clip(error.details() or code.name.lower())
    else:
        logger.warning(
            "upstream {rpc} failed with {grpc_code}: {upstream_message}",
            rpc=rpc,
            grpc_code=code.name,
            upstream_message=clip(error.details() or "", 2000),
        )
        message = _GENERIC_MESSAGE.get(code, code.name.lower())
    details = decode_details(raw_status) if isinstance(raw_status, bytes) else []
    # an open circuit breaker knows when the upstream will be tried again
    headers = {"Retry-After": error.retry_after_header} if isinstance(error, CircuitOpen) else None
    return ApiError(code, message, details=details, headers=headers)


def decode_details(raw_status: bytes) -> list[dict[str, Any]]:
    """The google.rpc.Status details of a trailer as JSON, debug information left out."""
    try:
        status = status_pb2.Status.FromString(raw_status)
    except DecodeError:
        return []
    decoded: list[dict[str, Any]] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.DebugInfo.DESCRIPTOR):
            continue  # stack traces and internal details stay inside
        try:
            as_json = json_format.MessageToDict(detail, preserving_proto_field_name=True)
        except (TypeError, KeyError, json_format.Error):
            as_json = {"@type": detail.type_url}
        decoded.append(_clip_strings(as_json))
    return decoded


def _clip_strings(value: Any) -> Any:
    if isinstance(value, str):
        return clip(value, 500) if len(value) > 500 or "\n" in value else value
    if isinstance(value, dict):
        return {k: _clip_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clip_strings(v) for v in value]
    return value
