"""Domain event envelopes: build one for a payload, read the payload back out."""

from __future__ import annotations

from datetime import UTC, datetime

from events.v1.events_pb2 import EventEnvelope
from google.protobuf.message import Message
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tienda_contracts.topology import EVENT_TYPES

from tienda_platform.ids import new_id

__all__ = [
    "EventEnvelope",
    "UnknownEvent",
    "build_envelope",
    "payload_of",
    "trace_context",
    "traced_context",
]

# An envelope's traceparent and tracestate are W3C Trace Context by the schema, as is the trace
# parent kept with deferred work (a saga, an email, a webhook delivery): they are written and
# read with the W3C propagator, whatever the process's propagators for headers and gRPC
# metadata are (OTEL_PROPAGATORS).
_W3C = TraceContextTextMapPropagator()


class UnknownEvent(ValueError):
    """An envelope whose type or payload this version does not know."""


def trace_context() -> dict[str, str]:
    """The W3C trace context of the current span: its traceparent, and its tracestate if it
    has one; empty outside any trace."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


def traced_context(traceparent: str, tracestate: str = "") -> Context:
    """A context whose current span is the one a W3C traceparent names (a remote span); an
    empty context when it names none (empty or malformed)."""
    carrier = {"traceparent": traceparent}
    if tracestate:
        carrier["tracestate"] = tracestate
    return _W3C.extract(carrier)


def build_envelope(
    *, event_type: str, source: str, subject: str, payload: Message
) -> EventEnvelope:
    """A new envelope (UUIDv7 id, now, current trace context) around payload."""
    declared = EVENT_TYPES.get(event_type)
    if declared is None or not isinstance(payload, declared.payload):
        raise UnknownEvent(f"{event_type} does not carry {type(payload).__name__}")
    envelope = EventEnvelope(
        id=new_id(),
        type=event_type,
        source=source,
        subject=subject,
        **trace_context(),
    )
    envelope.time.FromDatetime(datetime.now(UTC))
    envelope.data.Pack(payload)
    return envelope


def payload_of(envelope: EventEnvelope) -> Message:
    """The typed payload; UnknownEvent when the type or its data is not what topology says."""
    declared = EVENT_TYPES.get(envelope.type)
    if declared is None:
        raise UnknownEvent(f"unknown event type {envelope.type!r}")
    payload = declared.payload()
    if not envelope.data.Unpack(payload):
        raise UnknownEvent(f"{envelope.type} carries {envelope.data.type_url}")
    return payload


def stream_of(event_type: str) -> str:
    return EVENT_TYPES[event_type].stream
