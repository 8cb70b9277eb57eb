"""The default sampler keeps traces whole and leaves out background polling."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from tienda_platform.telemetry import QuietSampler

pytestmark = pytest.mark.unit


def test_client_calls_outside_a_trace_and_pool_checkouts_are_left_out() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=QuietSampler())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    with tracer.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT):
        pass  # a consumer polling, outside any trace
    with tracer.start_as_current_span("SELECT order.db", kind=SpanKind.CLIENT):
        pass  # the outbox relay looking for work
    with tracer.start_as_current_span("POST /v1/orders", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("connect", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span("INSERT order.db", kind=SpanKind.CLIENT):
            pass
        with tracer.start_as_current_span(
            "/product.v1.ProductService/ReserveStock", kind=SpanKind.CLIENT
        ):
            pass
    with tracer.start_as_current_span("outbox relay order.created", kind=SpanKind.PRODUCER):
        pass  # any span that is not a client call still starts a trace

    assert sorted(s.name for s in exporter.get_finished_spans()) == [
        "/product.v1.ProductService/ReserveStock",
        "INSERT order.db",
        "POST /v1/orders",
        "outbox relay order.created",
    ]
