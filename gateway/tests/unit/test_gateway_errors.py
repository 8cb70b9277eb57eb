"""gRPC statuses as REST errors: HTTP mapping, details, safe messages, correlation ids."""

from __future__ import annotations

import json

import grpc
import pytest
from gateway.errors import ApiError, clip, from_rpc_error
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from loguru import logger

pytestmark = pytest.mark.unit


def rpc_error(
    code: grpc.StatusCode, message: str, *details: object, with_trailer: bool = True
) -> grpc.aio.AioRpcError:
    trailers: tuple[tuple[str, str | bytes], ...] = ()
    if with_trailer:
        status = status_pb2.Status(code=code.value[0], message=message)
        for detail in details:
            packed = any_pb2.Any()
            packed.Pack(detail)  # type: ignore[arg-type]
            status.details.append(packed)
        trailers = (("grpc-status-details-bin", status.SerializeToString()),)
    return grpc.aio.AioRpcError(
        code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailers), details=message
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, 400),
        (grpc.StatusCode.FAILED_PRECONDITION, 400),
        (grpc.StatusCode.OUT_OF_RANGE, 400),
        (grpc.StatusCode.UNAUTHENTICATED, 401),
        (grpc.StatusCode.PERMISSION_DENIED, 403),
        (grpc.StatusCode.NOT_FOUND, 404),
        (grpc.StatusCode.ALREADY_EXISTS, 409),
        (grpc.StatusCode.ABORTED, 409),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, 429),
        (grpc.StatusCode.CANCELLED, 499),
        (grpc.StatusCode.UNIMPLEMENTED, 501),
        (grpc.StatusCode.UNAVAILABLE, 503),
        (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
        (grpc.StatusCode.UNKNOWN, 500),
        (grpc.StatusCode.INTERNAL, 500),
        (grpc.StatusCode.DATA_LOSS, 500),
    ],
)
def test_http_status_of_every_code(code: grpc.StatusCode, status: int) -> None:
    error = from_rpc_error(rpc_error(code, "told by the service"), rpc="x.v1.X/Y")
    assert error.http_status == status
    body = json.loads(bytes(error.response().body))
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == (code.value[0] if status != 500 else grpc.StatusCode.INTERNAL.value[0])


def test_bad_request_details_are_decoded() -> None:
    violation = error_details_pb2.BadRequest.FieldViolation(field="sku", description="required")
    error = from_rpc_error(
        rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT,
            "invalid sku: required",
            error_details_pb2.BadRequest(field_violations=[violation]),
            error_details_pb2.DebugInfo(detail="Traceback (most recent call last)"),
        ),
        rpc="product.v1.ProductService/CreateProduct",
    )
    assert error.body() == {
        "code": 3,
        "message": "invalid sku: required",
        "details": [
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "field_violations": [{"field": "sku", "description": "required"}],
            }
        ],
    }


def test_transport_failures_get_a_generic_message() -> None:
    transport = rpc_error(
        grpc.StatusCode.UNAVAILABLE,
        "failed to connect to all addresses; last error: ipv4:127.0.0.1:50052: refused",
        with_trailer=False,
    )
    error = from_rpc_error(transport, rpc="product.v1.ProductService/GetProduct")
    assert error.http_status == 503
    assert "127.0.0.1" not in error.message and "50052" not in error.message


def test_a_service_written_unavailable_message_is_kept() -> None:
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.UNAVAILABLE, "payment provider unavailable"), rpc="a/b"
    )
    assert error.message == "payment provider unavailable"


def test_server_failures_become_a_500_with_a_logged_correlation_id() -> None:
    lines: list[str] = []
    sink = logger.add(lines.append, format="{message} {extra}")
    try:
        error = from_rpc_error(
            rpc_error(grpc.StatusCode.UNKNOWN, "Exception calling application: secret boom"),
            rpc="product.v1.ProductService/GetProduct",
        )
    finally:
        logger.remove(sink)
    assert error.http_status == 500
    assert "boom" not in json.dumps(error.body())
    correlation_id = error.headers["X-Correlation-Id"]
    assert correlation_id in error.message
    assert error.details == [
        {"@type": "type.googleapis.com/google.rpc.RequestInfo", "request_id": correlation_id}
    ]
    assert any("secret boom" in line and correlation_id in line for line in lines)


def test_long_upstream_messages_are_clipped() -> None:
    error = from_rpc_error(
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "bad name: " + "y" * 1_000_000), rpc="a/b"
    )
    assert len(error.message) <= 300


def test_clip() -> None:
    assert clip("first line\nsecond") == "first line"
    assert clip("a" * 100) == "a" * 32 + "..."
    assert len(clip("word " * 200)) == 300
    assert clip("") == ""


def test_unauthenticated_asks_for_a_bearer_token() -> None:
    error = ApiError(grpc.StatusCode.UNAUTHENTICATED, "no")
    assert error.response().headers["www-authenticate"] == "Bearer"


def test_an_error_quoting_a_lone_surrogate_is_still_json() -> None:
    response = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "bad name '\ud800'").response()
    assert response.status_code == 400
    text = bytes(response.body).decode("utf-8")  # valid UTF-8: the surrogate is escaped
    assert "\\ud800" in text
    assert json.loads(text)["message"] == "bad name '\ud800'"
