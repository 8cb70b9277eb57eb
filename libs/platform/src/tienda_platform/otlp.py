"""OTLP span export with the message encoded straight to protobuf wire format.

The OTLP exporter builds a protobuf object for every span, attribute and value, which took
most of the export thread's time (`make bench` prints both encoders' CPU per span). Here the
spans of the common shape (a LeanSpan with plain attributes and no events, links or trace
state: nearly every span of an order) are written by a few lines of C (_otlp.c); any other
span is written in Python by SpanEncoder.span, which keeps each attribute's bytes once
encoded (the spans of an order repeat the same attributes over and over). Both write the
same bytes for the spans C takes (`tests: test_platform_otlp`), and the request that goes
out is the SDK's message (compared field by field), sent by the standard exporter,
configured by the standard OTEL_EXPORTER_OTLP_* variables. The export runs in the
BatchSpanProcessor's thread, but under the interpreter's lock: every microsecond of it is
one the service's event loop waits for.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from loguru import logger
from opentelemetry.exporter.otlp.proto.common._internal import (
    _encode_instrumentation_scope,
    _encode_resource,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind

from tienda_platform._otlp import encode_spans
from tienda_platform.spans import LeanSpan

_KINDS = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
# Span and Link flags (fixed32): whether the other end is remote is known (0x100), and
# it is (0x200).
_LOCAL = struct.pack("<I", 0x100)
_REMOTE = struct.pack("<I", 0x300)
_FIXED64 = struct.Struct("<Q")
_DOUBLE = struct.Struct("<d")
_SMALL = [bytes([n]) for n in range(128)]


def _varint(n: int) -> bytes:
    if 0 <= n < 128:
        return _SMALL[n]
    n &= 0xFFFFFFFFFFFFFFFF  # an int64 below 0 is its two's complement
    out = bytearray()
    while n >= 128:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, the payload's length, the payload."""
    return tag + _varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message, as opentelemetry's encoder makes it: 0x0a string, 0x10 bool,
    0x18 int (a varint), 0x21 double, 0x2a array, 0x32 key-value list, 0x3a bytes."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE.pack(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"invalid attribute type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    return _field(b"\x0a", key.encode()) + _field(b"\x12", _any_value(value))


class SpanEncoder:
    """ExportTraceServiceRequest bytes for a batch of spans; remembers encoded attributes
    (at most `cache_size`), resources and scopes."""

    def __init__(self, cache_size: int = 8192) -> None:
        self._cache_size = cache_size
        # (field tag, key, type, value) -> the encoded field
        self._attributes: dict[tuple[bytes, str, type, Any], bytes] = {}
        # by identity (a Resource hashes by dumping its attributes to JSON); each kept
        # alive by its entry, so that its id is not reused while the entry stands
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[InstrumentationScope | None, bytes] = {}

    def request(self, spans: Sequence[ReadableSpan]) -> bytes:
        # grouped by resource (by identity, see _resources) and scope, as the SDK's encoder does
        grouped: dict[
            int, tuple[Resource, dict[InstrumentationScope | None, list[ReadableSpan]]]
        ] = {}
        for span in spans:
            if type(span) is LeanSpan:  # its fields, without the properties' calls
                resource, scope = span._resource, span._instrumentation_scope
            else:
                resource, scope = span.resource, span.instrumentation_scope
            _, scopes = grouped.setdefault(id(resource), (resource, {}))
            scopes.setdefault(scope or None, []).append(span)
        # the message as a list of pieces joined once at the end: a length-delimited field
        # is its tag, the length of what it holds, then that, so each field's length is
        # added up from its pieces rather than its bytes being joined and copied again
        pieces: list[bytes] = []
        for resource, scopes in grouped.values():
            resource_field = len(pieces)
            pieces.append(b"")  # the ResourceSpans field's header, once its length is known
            resource_length = self._append_field(pieces, b"\x0a", self._resource(resource))
            for scope, members in scopes.items():
                scope_field = len(pieces)
                pieces.append(b"")
                # each span's field (0x12): written in C, or by self.span for the others
                scope_length = self._append_field(pieces, b"\x0a", self._scope(scope))
                encoded = encode_spans(members, LeanSpan, self.span)
                pieces.append(encoded)
                scope_length += len(encoded)
                if scope is not None and scope.schema_url:
                    scope_length += self._append_field(pieces, b"\x1a", scope.schema_url.encode())
                pieces[scope_field] = b"\x12" + _varint(scope_length)
                resource_length += len(pieces[scope_field]) + scope_length
            if resource.schema_url:
                resource_length += self._append_field(pieces, b"\x1a", resource.schema_url.encode())
            pieces[resource_field] = b"\x0a" + _varint(resource_length)
        return b"".join(pieces)

    @staticmethod
    def _append_field(pieces: list[bytes], tag: bytes, payload: bytes) -> int:
        """Append a length-delimited field to pieces; its length in bytes."""
        header = tag + _varint(len(payload))
        pieces.append(header)
        pieces.append(payload)
        return len(header) + len(payload)

    def span(self, span: ReadableSpan) -> bytes:
        """One Span message (opentelemetry/proto/trace/v1/trace.proto). Each field starts
        with its tag, (field number << 3) | wire type: 0x0a trace_id, 0x12 span_id, 0x1a
        trace_state, 0x22 parent_span_id, 0x2a name, 0x30 kind, 0x39 and 0x41 the start and
        end times (fixed64), 0x4a attributes, 0x50 dropped_attributes_count, 0x5a events,
        0x60 dropped_events_count, 0x6a links, 0x70 dropped_links_count, 0x7a status and
        0x85 0x01 flags (field 16, fixed32). Fields left at their default are left out, as
        the protobuf runtime leaves them out."""
        if type(span) is LeanSpan:
            # its fields, read directly: the ReadableSpan properties cost a call each (some
            # two, or a copy), about twenty per span
            fields: Any = span
            context, parent = fields._context, fields._parent
            name, kind = fields._name, fields._kind
            start_time, end_time, status = fields._start_time, fields._end_time, fields._status
            attributes, events, links = fields._attributes, fields._events, fields._links
            dropped_attributes = 0 if type(attributes) is dict else attributes.dropped
            dropped_events = events.dropped if type(events) is BoundedList else 0
            dropped_links = links.dropped if type(links) is BoundedList else 0
        else:
            context, parent, name, kind = span.get_span_context(), span.parent, span.name, span.kind
            start_time, end_time, status = span.start_time, span.end_time, span.status
            attributes, events, links = span.attributes, span.events, span.links
            dropped_attributes = span.dropped_attributes
            dropped_events, dropped_links = span.dropped_events, span.dropped_links
        assert context is not None  # a recorded span always has one
        parts = [
            b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
            parts.append(_field(b"\x1a", state.encode()))
        if parent:
            parts.append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        parts.append(_field(b"\x2a", name.encode()))
        parts.append(_KINDS[kind])
        if start_time:
            parts.append(b"\x39" + _FIXED64.pack(start_time))
        if end_time:
            parts.append(b"\x41" + _FIXED64.pack(end_time))
        if attributes:
            parts.append(self._attribute_fields(b"\x4a", attributes))
        if dropped_attributes:
            parts.append(b"\x50" + _varint(dropped_attributes))
        for event in events:
            body = b"\x09" + _FIXED64.pack(event.timestamp) + _field(b"\x12", event.name.encode())
            if event.attributes:
                body += self._attribute_fields(b"\x1a", event.attributes)
            if event.dropped_attributes:
                body += b"\x20" + _varint(event.dropped_attributes)
            parts.append(_field(b"\x5a", body))
        if dropped_events:
            parts.append(b"\x60" + _varint(dropped_events))
        for link in links:
            body = (
                b"\x0a\x10"
                + link.context.trace_id.to_bytes(16, "big")
                + b"\x12\x08"
                + link.context.span_id.to_bytes(8, "big")
            )
            if link.attributes:
                body += self._attribute_fields(b"\x22", link.attributes)
            if link.dropped_attributes:
                body += b"\x28" + _varint(link.dropped_attributes)
            body += b"\x35" + _flag_bits(link.context)
            parts.append(_field(b"\x6a", body))
        if dropped_links:
            parts.append(b"\x70" + _varint(dropped_links))
        body = b""
        if status.description:
            body += _field(b"\x12", status.description.encode())
        if status.status_code.value:
            body += b"\x18" + _varint(status.status_code.value)
        parts.append(_field(b"\x7a", body))
        parts.append(b"\x85\x01" + _flag_bits(parent))
        return b"".join(parts)

    def _attribute_fields(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        out = []
        cache = self._attributes
        for key, value in attributes.items():
            kind = type(value)
            # floats are left out: 0.0 and -0.0 are one key but two encodings
            if kind is str or kind is int or kind is bool:
                cached = cache.get((tag, key, kind, value))
                if cached is None:
                    cached = _field(tag, _key_value(key, value))
                    if len(cache) >= self._cache_size:
                        cache.clear()
                    cache[(tag, key, kind, value)] = cached
                out.append(cached)
                continue
            try:
                out.append(_field(tag, _key_value(key, value)))
            except TypeError as error:
                logger.warning("span attribute {key} not exported: {error}", key=key, error=error)
        return b"".join(out)

    def _resource(self, resource: Resource) -> bytes:
        known = self._resources.get(id(resource))
        if known is None:
            known = self._resources[id(resource)] = (
                resource,
                _encode_resource(resource).SerializeToString(),
            )
        return known[1]

    def _scope(self, scope: InstrumentationScope | None) -> bytes:
        encoded = self._scopes.get(scope)
        if encoded is None:
            encoded = self._scopes[scope] = _encode_instrumentation_scope(
                scope  # type: ignore[arg-type]
            ).SerializeToString()
        return encoded


def _flag_bits(other_end: SpanContext | None) -> bytes:
    return _REMOTE if other_end is not None and other_end.is_remote else _LOCAL


class _EncodedTraceServiceStub:
    """TraceServiceStub whose Export sends a request's bytes as they are: SpanEncoder has
    written the ExportTraceServiceRequest message already, and parsing it into the protobuf
    object for the stub to write it out again would cost the export thread as much as the
    writing did."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=bytes,
            response_deserializer=ExportTraceServiceResponse.FromString,
            _registered_method=True,
        )


class FastOTLPSpanExporter(OTLPSpanExporter):
    """The OTLP/gRPC span exporter (same settings, same channel, same retries, same request)
    with SpanEncoder's encoding, sent by a stub that takes the request's bytes.

    The exporter makes its stub from `_stub` whenever it opens its channel (at the start,
    and again after an UNAVAILABLE), and hands `_translate_data`'s answer to its Export:
    these two names are the SDK's, pinned in requirements.lock. test_platform_otlp sends
    through it to a real receiver, and so do the services in the end-to-end tests (tests/,
    whose stacks export to an OTLP receiver)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()
        self._stub = _EncodedTraceServiceStub
        self._client = self._stub(self._channel)

    def _translate_data(  # type: ignore[override]  # the stub above sends bytes
        self, data: Sequence[ReadableSpan]
    ) -> bytes:
        return self._encoder.request(data)
