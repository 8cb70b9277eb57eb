"""Real OTLP trace receivers: over gRPC (the opentelemetry-proto service definitions served by
grpcio), one that keeps every span it is sent, for the telemetry tests, and one in a process
of its own that counts them, for the tracing benchmark; and over HTTP (OTLP/HTTP's binary
protobuf encoding, POST <path>, plain or gzip), one that keeps every request."""

from __future__ import annotations

import gzip
import multiprocessing
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tienda_devstack.stack import cpu_seconds


@dataclass(frozen=True)
class ReceivedEvent:
    """An event recorded on a span (an exception, for instance)."""

    name: str
    attributes: dict[str, object]


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, object]
    links: tuple[str, ...]  # trace ids of linked spans
    linked_span_ids: tuple[str, ...] = ()  # span ids of linked spans, in the order of links
    events: tuple[ReceivedEvent, ...] = ()
    status_code: int = 0  # 0 unset, 1 ok, 2 error
    status_message: str = ""


def _value(any_value) -> object:
    field = any_value.WhichOneof("value")
    return getattr(any_value, field) if field else None


def _decode(request) -> tuple[list[ReceivedSpan], list[dict[str, object]]]:
    spans, resources = [], []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        resources.append(resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    ReceivedSpan(
                        service=str(resource.get("service.name", "")),
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        kind=span.kind,
                        attributes={a.key: _value(a.value) for a in span.attributes},
                        links=tuple(link.trace_id.hex() for link in span.links),
                        linked_span_ids=tuple(link.span_id.hex() for link in span.links),
                        events=tuple(
                            ReceivedEvent(
                                event.name, {a.key: _value(a.value) for a in event.attributes}
                            )
                            for event in span.events
                        ),
                        status_code=span.status.code,
                        status_message=span.status.message,
                    )
                )
    return spans, resources


def _span_count(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    """How many spans an export request carries, without decoding them."""
    return sum(
        len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans
    )


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OtlpReceiver) -> None:
        self._receiver = receiver

    def Export(self, request, context):
        # kept as received, decoded when read: the receiver stands in for a collector on
        # another machine, and should take as little as it can of this one's CPU
        with self._receiver.lock:
            self._receiver.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """Listens on 127.0.0.1:<port>; point OTEL_EXPORTER_OTLP_ENDPOINT at `endpoint`."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._spans: list[ReceivedSpan] = []
        self._resources: list[dict[str, object]] = []
        self._decoded = 0  # how many of the requests _spans and _resources hold
        self.lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=1)

    def _catch_up(self) -> None:
        """Decode the requests that arrived since the last read (holding the lock)."""
        for request in self.requests[self._decoded :]:
            spans, resources = _decode(request)
            self._spans.extend(spans)
            self._resources.extend(resources)
        self._decoded = len(self.requests)

    def snapshot(self) -> list[ReceivedSpan]:
        with self.lock:
            self._catch_up()
            return list(self._spans)

    @property
    def resources(self) -> list[dict[str, object]]:
        """The resource attributes of every batch of spans received."""
        with self.lock:
            self._catch_up()
            return list(self._resources)

    def span_count(self) -> int:
        """How many spans arrived, without decoding them."""
        with self.lock:
            requests = list(self.requests)
        return sum(_span_count(request) for request in requests)

    def wait_for(self, predicate, timeout: float = 20.0) -> list[ReceivedSpan]:
        """Wait until predicate(spans) is true; returns the spans then."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            assert time.monotonic() < deadline, f"spans never matched; got {len(spans)} spans"
            time.sleep(0.1)


class _CountingTraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, count: Synchronized) -> None:
        self._count = count

    def Export(self, request, context):
        spans = _span_count(request)
        with self._count.get_lock():
            self._count.value += spans
        return trace_service_pb2.ExportTraceServiceResponse()


def _serve_counting(count: Synchronized, port: Synchronized, ready: Event) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_CountingTraceService(count), server)
    port.value = server.add_insecure_port("127.0.0.1:0")
    server.start()
    ready.set()
    server.wait_for_termination()


class SpanCountingReceiver:
    """An OTLP/gRPC trace receiver in a process of its own that counts the spans it is sent
    and keeps none: the stand-in for a collector in the tracing benchmark.

    A collector runs apart from the services and from whoever loads them. A receiver in the
    benchmark's own process (OtlpReceiver) would take the interpreter's lock from the load
    generator and from the watcher that times each order's terminal state, for as long as it
    parses each request, so that the traced stacks' figures would carry a cost of the
    benchmark's making. Its CPU is still spent on this machine's cores."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        self._count = context.Value("q", 0)
        port = context.Value("i", 0)
        ready = context.Event()
        self._process = context.Process(
            target=_serve_counting, args=(self._count, port, ready), daemon=True
        )
        self._process.start()
        if not ready.wait(30):
            self._process.kill()
            raise RuntimeError("the span-counting receiver did not start")
        self.port = port.value

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def span_count(self) -> int:
        return int(self._count.value)

    def cpu_seconds(self) -> float:
        """The receiver process's CPU time so far."""
        assert self._process.pid is not None  # started in __init__
        return cpu_seconds(self._process.pid)

    def running(self) -> bool:
        return self._process.is_alive()

    def stop(self) -> None:
        self._process.kill()
        self._process.join(5)


@dataclass(frozen=True)
class HttpExport:
    """One OTLP/HTTP export request as it arrived."""

    path: str
    headers: dict[str, str]  # names in lower case
    spans: list[ReceivedSpan]
    resources: list[dict[str, object]]


class OtlpHttpReceiver:
    """Listens on 127.0.0.1:<port> for OTLP/HTTP with binary protobuf bodies (what the SDK's
    http/protobuf exporter sends), as a collector's `otlp` receiver does on 4318: any path
    (the exporter posts to <endpoint>/v1/traces, or to OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as
    it is), a body plain, gzip or deflate, answered 200 with an ExportTraceServiceResponse;
    a body that is not one, 400."""

    def __init__(self) -> None:
        self.exports: list[HttpExport] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                encoding = self.headers.get("Content-Encoding", "")
                try:
                    if encoding == "gzip":
                        body = gzip.decompress(body)
                    elif encoding == "deflate":
                        body = zlib.decompress(body)
                    request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                except Exception:  # any undecodable body is the client's error
                    self.send_response(400)
                    self.end_headers()
                    return
                spans, resources = _decode(request)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    receiver.exports.append(HttpExport(self.path, headers, spans, resources))
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass  # the tests read what arrived, not an access log

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpHttpReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def received(self) -> list[HttpExport]:
        with self.lock:
            return list(self.exports)
