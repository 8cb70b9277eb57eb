"""`python -m gateway`: uvicorn with uvloop and httptools, JSON logs, traces, graceful stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from tienda_devstack.otlp_receiver import OtlpReceiver, ReceivedSpan
from tienda_platform.redis_server import free_port
from tienda_platform.testing import eventually

from .upstream_fakes import MUG_ID, Upstream

pytestmark = pytest.mark.integration

SERVER_KIND = 2  # opentelemetry.proto.trace.v1.Span.SpanKind.SPAN_KIND_SERVER


@asynccontextmanager
async def running_gateway(
    upstreams: dict[str, Upstream], log_path: Path, **env: str
) -> AsyncIterator[tuple[httpx.AsyncClient, asyncio.subprocess.Process]]:
    """The gateway as its own process, up (GET /healthz answers), killed if still running."""
    port = free_port()
    environment = {
        **os.environ,
        "BIND_HOST": "127.0.0.1",
        "GATEWAY_PORT": str(port),
        "AUTH_GRPC_TARGET": upstreams["auth"].target,
        "PRODUCT_GRPC_TARGET": upstreams["product"].target,
        "ORDER_GRPC_TARGET": upstreams["order"].target,
        "LOG_LEVEL": "INFO",
        **env,
    }
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway", env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
            deadline = time.monotonic() + 20
            while True:
                assert process.returncode is None, f"the gateway exited; see {log_path}"
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "the gateway did not start"
                await asyncio.sleep(0.05)
            yield http, process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_serves_logs_json_and_stops_on_sigterm(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    log_path = tmp_path / "gateway.log"
    async with running_gateway(upstreams, log_path, OTEL_SDK_DISABLED="true") as (http, process):
        response = await http.get(
            f"/v1/products/{MUG_ID}", headers={"Authorization": "Bearer top-secret-jwt"}
        )
        assert response.status_code == 200
        assert response.json()["id"] == MUG_ID
        assert "server" not in response.headers
        assert (await http.get("/readyz")).status_code == 200
        process.send_signal(signal.SIGTERM)
        # uvicorn drains, runs the lifespan shutdown, then re-raises the signal it caught.
        assert await asyncio.wait_for(process.wait(), 15) in (0, -signal.SIGTERM)
    output = log_path.read_text()
    records = [json.loads(line) for line in output.splitlines()]
    assert all(r["service.name"] == "gateway" for r in records)
    access = [r for r in records if r.get("http.route") == "/v1/products/{id}"]
    assert len(access) == 1 and access[0]["http.response.status_code"] == 200
    assert "top-secret-jwt" not in output
    assert not any(r.get("log.logger", "").startswith("uvicorn.access") for r in records)
    assert "Application shutdown complete." in output


async def test_traces_start_at_the_gateway_and_continue_upstream(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    receiver = OtlpReceiver().start()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    try:
        async with running_gateway(
            upstreams,
            tmp_path / "gateway.log",
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_EXPORTER_OTLP_INSECURE="true",
            OTEL_BSP_SCHEDULE_DELAY="100",
        ) as (http, _):
            response = await http.get(
                f"/v1/products/{MUG_ID}",
                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
            )
            assert response.status_code == 200

            def has_server_span(spans: list[ReceivedSpan]) -> bool:
                return any(s.trace_id == trace_id and s.kind == SERVER_KIND for s in spans)

            spans = await asyncio.to_thread(receiver.wait_for, has_server_span)
    finally:
        receiver.stop()
    server = next(s for s in spans if s.trace_id == trace_id and s.kind == SERVER_KIND)
    assert (server.service, server.name) == ("gateway", "GET /v1/products/{id}")
    assert server.attributes["http.route"] == "/v1/products/{id}"
    assert MUG_ID not in server.name
    upstream = upstreams["product"].fake.last_metadata("GetProduct")
    assert upstream["traceparent"].split("-")[1] == trace_id


async def test_oversized_and_malformed_requests_get_json_errors(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """A head over GATEWAY_MAX_HEADER_BYTES is refused with 431 before it is all kept in
    memory; a request that is not HTTP gets a 400; both in the API's error shape. A request
    just under the bound is served, and so is the next one on the same connection."""
    async with running_gateway(
        upstreams, tmp_path / "gateway.log", GATEWAY_MAX_HEADER_BYTES="4096"
    ) as (http, _):
        port = http.base_url.port
        assert port is not None

        async def exchange(request: bytes) -> tuple[int, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), 10)  # until the gateway closes
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            return int(head.split(b" ", 2)[1]), body

        status, body = await exchange(
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n"
        )
        assert status == 431
        assert json.loads(body) == {
            "code": 8,
            "message": "the request line and headers are larger than 4096 bytes",
            "details": [],
        }
        # never finished: refused once that much has arrived, not kept waiting for the rest
        status, _ = await exchange(b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 10_000)
        assert status == 431
        status, body = await exchange(b"NOT HTTP AT ALL\r\n\r\n")
        assert (status, json.loads(body)["message"]) == (400, "malformed HTTP request")

        fits = {"X-Fits": "a" * 3000}
        for _ in range(2):  # the count starts again with each request on a connection
            assert (await http.get("/healthz", headers=fits)).status_code == 200


async def test_slow_heads_and_bodies_are_timed_out_and_idle_connections_closed(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """GATEWAY_READ_TIMEOUT_SECONDS bounds how long a request's head, and then its body, may
    take to arrive: a client trickling them cannot hold a connection forever (slowloris)."""
    async with running_gateway(
        upstreams, tmp_path / "gateway.log", GATEWAY_READ_TIMEOUT_SECONDS="1"
    ) as (http, _):
        port = http.base_url.port
        assert port is not None

        async def answer_to(partial_request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(partial_request)  # and then nothing more
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(), 15)  # until the gateway closes
            finally:
                writer.close()

        head = await answer_to(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert head.startswith(b"HTTP/1.1 408 ")
        assert json.loads(head.partition(b"\r\n\r\n")[2]) == {
            "code": 4,
            "message": "the request's headers did not all arrive within 1 s",
            "details": [],
        }
        assert await answer_to(b"") == b""  # not a byte of a request: closed, unanswered

        body = await answer_to(
            b"POST /v1/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"sku":'
        )
        assert body.startswith(b"HTTP/1.1 408 ")
        assert b"the request body did not all arrive within 1 s" in body
        assert not [c for c in upstreams["product"].fake.calls if c[0] == "CreateProduct"]

        # a connection kept alive after an answer is not timed out by a request that follows
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/healthz")).status_code == 200


async def test_a_client_gone_before_its_body_arrived_is_not_a_server_error(
    upstreams: dict[str, Upstream], tmp_path: Path
) -> None:
    """A client that closes its connection mid-body is nobody to answer: the request is
    counted and logged as 499 (client closed request), not as a 500 with an error line."""
    log = tmp_path / "gateway.log"
    async with running_gateway(upstreams, log) as (http, _):
        port = http.base_url.port
        assert port is not None
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            b"POST /v1/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"sku":'
        )
        await writer.drain()
        writer.close()
        await writer.wait_closed()

        async def counted() -> bool:
            exposition = (await http.get("/metrics")).text
            return (
                'http_server_requests_total{method="POST",route="/v1/products",'
                'status_code="499"} 1.0'
            ) in exposition

        await eventually(counted, within=10)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    assert not [line for line in lines if line["log.level"] == "error"]
    assert any(line["message"] == "POST /v1/products 499" for line in lines)
    assert not [c for c in upstreams["product"].fake.calls if c[0] == "CreateProduct"]
