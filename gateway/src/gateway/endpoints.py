"""Handlers of the gateway's routes: the transcoded RPCs, health, readiness and metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf.message import Message
from prometheus_client import REGISTRY
from prometheus_client.exposition import choose_encoder
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.conditional import (
    Condition,
    changed_since_read,
    entity_tag,
    etag_of,
    precondition_failed,
)
from gateway.errors import ApiError, from_rpc_error
from gateway.transcoding import RequestBuilder, response_json
from gateway.upstreams import Metadata, UnaryCall, Upstreams

MAX_AUTHORIZATION_CHARS = 8 * 1024


def json_response(
    data: Any, status_code: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A compact JSON response."""
    return Response(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        status_code=status_code,
        headers=headers,
        media_type="application/json",
    )


def forwarded_metadata(request: Request) -> Metadata:
    """The caller's Authorization header as `authorization` call metadata."""
    value = request.headers.get("authorization")
    if value is None:
        return ()
    # gRPC metadata must be printable ASCII; refusing here beats a cryptic transport error.
    if len(value) > MAX_AUTHORIZATION_CHARS or not value.isascii() or not value.isprintable():
        raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "malformed Authorization header")
    return (("authorization", value),)


async def read_body(request: Request, *, limit: int, within: float) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed `limit` bytes, and
    with 408 if it has not all arrived `within` seconds."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            grpc.StatusCode.DEADLINE_EXCEEDED,
            f"the request body did not all arrive within {within:g} s",
            http_status=408,
        ) from None
    except ClientDisconnect:
        # Nobody is left to answer; the access log and http_server_requests_total record it
        # as the client's doing (499, "client closed request"), not as a server error.
        raise ApiError(
            grpc.StatusCode.CANCELLED,
            "the client closed the connection before its request body arrived",
            http_status=CLIENT_CLOSED_REQUEST,
        ) from None
    return b"".join(chunks)


# the status nginx and others record for a request its client abandoned
CLIENT_CLOSED_REQUEST = 499


def _too_large(limit: int) -> ApiError:
    return ApiError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        f"the request body is larger than {limit} bytes",
        http_status=413,
    )


class RpcEndpoint:
    """The REST face of one RPC: request message in, upstream call, response JSON out."""

    def __init__(
        self,
        *,
        builder: RequestBuilder,
        call: UnaryCall,
        max_body_bytes: int,
        read_timeout: float = 15.0,
    ) -> None:
        self.builder = builder
        self.call = call
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout

    async def __call__(self, request: Request, params: dict[str, str]) -> Response:
        metadata = forwarded_metadata(request)
        body = (
            await read_body(request, limit=self.max_body_bytes, within=self.read_timeout)
            if self.builder.has_body
            else b""
        )
        query = request.query_params.multi_items() if request.scope["query_string"] else ()
        message = self.builder.build(path_params=params, query=query, body=body)
        reads = self.builder.binding.http_method == "GET"
        if_match = _condition(request, "If-Match")
        if if_match is not None and not reads:
            self._make_conditional(message, if_match)
        idempotency_key = request.headers.get("Idempotency-Key")
        if idempotency_key is not None and self.builder.takes_request_id:
            self.builder.set_request_id(message, idempotency_key.strip())
        try:
            reply = await self.call(message, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            failure = from_rpc_error(error, rpc=self.call.full_name)
            if if_match is not None and failure.code is grpc.StatusCode.ABORTED:
                failure = changed_since_read(failure)
            raise failure from None
        etag = etag_of(reply)
        headers = {"ETag": entity_tag(etag)} if etag else {}
        if reads:
            if if_match is not None and not if_match.strong_match(etag):
                raise precondition_failed("the resource does not have the entity tag of If-Match")
            if_none_match = _condition(request, "If-None-Match")
            if if_none_match is not None and if_none_match.weak_match(etag):
                return Response(status_code=304, headers=headers)
        return json_response(response_json(reply), headers=headers)

    def _make_conditional(self, message: Message, if_match: Condition) -> None:
        """The change goes ahead only if the resource still has If-Match's entity tag."""
        if not self.builder.takes_etag:
            if not if_match.any:
                raise precondition_failed("this resource has no entity tags to match")
            return
        tag = if_match.strong_tag()
        if tag is not None:
            self.builder.set_etag(message, tag)


def _condition(request: Request, name: str) -> Condition | None:
    value = request.headers.get(name)
    return None if value is None else Condition(value, name)


async def healthz(request: Request, params: dict[str, str]) -> Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


class Readiness:
    """Readiness: every upstream reports SERVING on grpc.health.v1."""

    def __init__(self, upstreams: Upstreams) -> None:
        self.upstreams = upstreams

    async def __call__(self, request: Request, params: dict[str, str]) -> Response:
        statuses = await self.upstreams.health()
        not_serving = sorted(name for name, status in statuses.items() if status != "SERVING")
        body: dict[str, Any] = {"status": "ready" if not not_serving else "not ready"}
        body["upstreams"] = statuses
        if not_serving:
            body["not_serving"] = not_serving
        return json_response(body, 503 if not_serving else 200)


async def metrics_page(request: Request, params: dict[str, str]) -> Response:
    """Prometheus exposition of every metric of this process: OpenMetrics (with the latency
    histograms' exemplars) for a scraper that asks for it, as Prometheus does, else text."""
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(REGISTRY), media_type=content_type)
