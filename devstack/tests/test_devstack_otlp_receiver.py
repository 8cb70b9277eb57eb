"""The tracing benchmark's collector stand-in: a real OTLP/gRPC receiver in a process of its
own, counting the spans a real exporter sends it."""

from __future__ import annotations

import time

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from tienda_devstack.otlp_receiver import SpanCountingReceiver

pytestmark = pytest.mark.integration


def test_the_receiver_counts_the_spans_exported_to_it_from_its_own_process() -> None:
    receiver = SpanCountingReceiver()
    try:
        assert receiver.running()
        assert receiver.span_count() == 0
        provider = TracerProvider()
        provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True))
        )
        tracer = provider.get_tracer("test")
        for n in range(7):
            with tracer.start_as_current_span(f"span {n}"):
                pass
        provider.shutdown()
        deadline = time.monotonic() + 10
        while receiver.span_count() < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.span_count() == 7
        assert receiver.cpu_seconds() > 0  # the receiving process's, read from /proc
    finally:
        receiver.stop()
    assert not receiver.running()
