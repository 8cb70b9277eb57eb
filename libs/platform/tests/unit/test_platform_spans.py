"""LeanTracerProvider records what the SDK's TracerProvider records, to the byte: the same
scenes, played through each, export the same OTLP message (times aside)."""

from __future__ import annotations

import asyncio
import contextvars
import re
from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
)
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)
from opentelemetry.trace.span import TraceState
from tienda_platform.otlp import SpanEncoder
from tienda_platform.spans import (
    LeanSpan,
    LeanTracerProvider,
    current_span_context,
    in_sampled_trace,
)
from tienda_platform.telemetry import QuietSampler, configured_sampler
from tienda_platform.testing import CountingIds

pytestmark = pytest.mark.unit

REMOTE = SpanContext(
    trace_id=0x0AF7651916CD43DD8448EB211C80319C,
    span_id=0x00F067AA0BA902B7,
    is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("vendor", "value")]),
)


Scene = Callable[[trace.Tracer], None]


def plain_attributes(tracer: trace.Tracer) -> None:
    # a statement's span in a trace from another service (outside any trace, the services'
    # sampler drops client spans)
    span = tracer.start_span(
        "INSERT orders",
        context=trace.set_span_in_context(NonRecordingSpan(REMOTE)),
        kind=SpanKind.CLIENT,
        attributes={"db.system": "sqlite", "db.statement": "INSERT", "n": 3, "r": 0.5},
    )
    span.set_attribute("order.id", "0190")
    span.set_attribute("n", 4)  # set again: moves to the end
    span.set_attributes({"yes": True, "no": False, "neg": -1})
    span.end()


def values_the_sdk_cleans(tracer: trace.Tracer) -> None:
    # a list becomes a tuple, an empty key is dropped; None, bytes, a map and a mixed list
    # are values in this SDK (OpenTelemetry's AnyValue)
    span = tracer.start_span("cleaned", attributes={"list": ["a", "b"], "first": "kept"})
    span.set_attribute("none", None)  # type: ignore[arg-type]
    span.set_attribute("dict", {"a": 1})  # type: ignore[arg-type]
    span.set_attribute("mixed", [1, "a"])  # type: ignore[list-item]
    span.set_attribute("", "empty key")
    span.set_attribute("after", "plain again")
    span.set_attributes({"bytes": b"raw", "numbers": (1, 2)})
    span.set_attributes({1: "a key named by its str"})  # type: ignore[dict-item]
    span.set_attribute(2, "dropped, one at a time")  # type: ignore[arg-type]
    span.end()


def events_links_and_statuses(tracer: trace.Tracer) -> None:
    with tracer.start_as_current_span(
        "tienda.order.events handle order.created",
        context=trace.set_span_in_context(NonRecordingSpan(REMOTE)),
        kind=SpanKind.CONSUMER,
        links=[Link(REMOTE, {"link.kind": "batch"}), Link(INVALID_SPAN_CONTEXT)],
    ) as handling:
        handling.add_event("retry", {"attempt": 2}, timestamp=1_000)
        handling.add_link(REMOTE, {"late": True})
        handling.add_link(INVALID_SPAN_CONTEXT)  # not valid, not kept
        handling.update_name("tienda.order.events handle order.created v1")
        child = tracer.start_span("saga pay", start_time=5_000)
        child.set_status(Status(StatusCode.OK))
        child.set_status(StatusCode.ERROR, "ignored once OK")
        child.end(end_time=9_000)
        other = tracer.start_span("saga reserve")
        other.set_status(StatusCode.UNSET)
        other.set_status(StatusCode.ERROR, "out of stock")
        other.end()


def exceptions(tracer: trace.Tracer) -> None:
    with pytest.raises(ValueError), tracer.start_as_current_span("raising"):
        raise ValueError("declined")
    with (
        pytest.raises(KeyError),
        tracer.start_as_current_span(
            "quiet", record_exception=False, set_status_on_exception=False
        ),
    ):
        raise KeyError("unknown")
    span = tracer.start_span("recorded")
    try:
        raise RuntimeError("timeout")
    except RuntimeError as error:
        span.record_exception(error, {"extra": "x"}, timestamp=2_000)
    span.end()


def current_spans(tracer: trace.Tracer) -> None:
    # as a decorator, a span per call; kept open past its block; left by a BaseException,
    # which is neither recorded nor an error; the context before each block restored after it
    @tracer.start_as_current_span("decorated", attributes={"order.id": "0190"})
    def decorated(number: int) -> int:
        tracer.start_span(f"inside {number}").end()
        return number

    assert [decorated(1), decorated(2)] == [1, 2]
    with tracer.start_as_current_span("outer", kind=SpanKind.SERVER) as outer:
        with tracer.start_as_current_span("kept open", end_on_exit=False) as kept_open:
            assert trace.get_current_span() is kept_open
        assert trace.get_current_span() is outer
        with pytest.raises(asyncio.CancelledError), tracer.start_as_current_span("cancelled"):
            raise asyncio.CancelledError
        assert trace.get_current_span() is outer
        kept_open.set_attribute("late", True)
        kept_open.end()
    assert trace.get_current_span() is trace.INVALID_SPAN


def changes_after_the_end(tracer: trace.Tracer) -> None:
    span = tracer.start_span("ended", attributes={"a": 1})
    span.end()
    span.set_attribute("b", 2)
    span.set_attributes({"c": 3})
    span.add_event("late")
    span.add_link(REMOTE)
    span.update_name("renamed")
    span.set_status(StatusCode.ERROR, "late")
    span.end()  # a second end exports nothing more


def limits(tracer: trace.Tracer) -> None:
    span = tracer.start_span(
        "crowded",
        attributes={"a": "x" * 10, "b": 2, "c": 3, "d": 4},
        links=[Link(REMOTE), Link(REMOTE), Link(REMOTE)],
    )
    span.set_attribute("b", "longer than six")  # replaced, truncated
    span.set_attribute("e", 5)  # the oldest goes
    for number in range(3):
        span.add_event(f"event {number}", {"k1": 1, "k2": 2, "k3": 3}, timestamp=number)
    span.end()


def sampled_out(tracer: trace.Tracer) -> None:
    # under a parent that is not sampled, a parent-based sampler records nothing
    unsampled = SpanContext(REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(0))
    context = trace.set_span_in_context(NonRecordingSpan(unsampled))
    with tracer.start_as_current_span("not kept", context=context) as span:
        assert not span.is_recording()
        tracer.start_span("child, not kept").end()


SCENES: list[Scene] = [
    plain_attributes,
    values_the_sdk_cleans,
    events_links_and_statuses,
    exceptions,
    current_spans,
    changes_after_the_end,
    sampled_out,
]
LIMITS = SpanLimits(
    max_span_attributes=3,
    max_span_attribute_length=6,
    max_events=2,
    max_links=2,
    max_event_attributes=2,
    max_link_attributes=2,
)


def recorded(
    provider_class: type[TracerProvider],
    scene: Scene,
    limits: SpanLimits | None = None,
    sampler: Sampler | None = None,
) -> list[ReadableSpan]:
    kept = InMemorySpanExporter()
    provider = provider_class(
        resource=Resource.create({"service.name": "order_service"}),
        sampler=sampler or ParentBasedTraceIdRatio(1.0),
        id_generator=CountingIds(),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(kept))
    try:
        scene(provider.get_tracer("tienda", "0.1.0"))
        return list(kept.get_finished_spans())
    finally:
        provider.shutdown()


# a frame of a stack trace, as traceback formats it: its "File" line and its source line
_FRAME = re.compile(r'  File "(?P<file>[^"]+)", line \d+, in \S+\n(?:    .*\n)?')


def without_sdk_frames(stacktrace: str) -> str:
    """A stack trace without the frames of OpenTelemetry's own code. An exception leaving
    the SDK's start_as_current_span passes through its two generators (start_as_current_span
    and use_span), which then head the stack trace it records; LeanTracer's context manager
    is a class, and its stack traces begin where the caller's code raised."""
    return _FRAME.sub(
        lambda frame: "" if "/opentelemetry/" in frame["file"] else frame[0], stacktrace
    )


def timeless(spans: list[ReadableSpan]) -> ExportTraceServiceRequest:
    """The OTLP message the SDK's encoder builds, with the times not given by the scene
    left out (the two runs take them at different moments), and the stack traces without
    OpenTelemetry's frames (see without_sdk_frames)."""
    message = encode_spans(spans)
    for resource in message.resource_spans:
        for scope in resource.scope_spans:
            for span in scope.spans:
                if span.name != "saga pay":  # its times were given
                    span.start_time_unix_nano = span.end_time_unix_nano = 0
                for event in span.events:
                    if event.name == "exception" and event.time_unix_nano > 10_000:
                        event.time_unix_nano = 0
                    for attribute in event.attributes:
                        if attribute.key == "exception.stacktrace":
                            value = attribute.value.string_value
                            attribute.value.string_value = without_sdk_frames(value)
    return message


# The services' sampler (QuietSampler over parentbased_always_on) says that it keeps every
# child of a kept parent, and LeanTracer then records those without asking it; the SDK's
# ParentBased sampler says nothing, and is asked for every span.
SAMPLERS: dict[str, Callable[[], Sampler]] = {
    "parent-based": lambda: ParentBasedTraceIdRatio(1.0),
    "services'": configured_sampler,
}


@pytest.mark.parametrize("sampler", SAMPLERS.values(), ids=SAMPLERS.keys())
@pytest.mark.parametrize("scene", [*SCENES, limits], ids=lambda scene: scene.__name__)
def test_a_scene_records_what_the_sdk_records(scene: Scene, sampler: Callable[[], Sampler]) -> None:
    limits_ = LIMITS if scene is limits else None
    sdk = recorded(TracerProvider, scene, limits_, sampler())
    lean = recorded(LeanTracerProvider, scene, limits_, sampler())
    assert sdk or scene is sampled_out
    assert all(type(span) is LeanSpan for span in lean)
    assert timeless(lean) == timeless(sdk)
    # the project's own encoder reads LeanSpans as it reads the SDK's
    assert ExportTraceServiceRequest.FromString(SpanEncoder().request(lean)) == encode_spans(lean)


def test_an_exception_leaving_a_current_span_is_recorded_from_where_it_was_raised() -> None:
    sdk = recorded(TracerProvider, exceptions)
    lean = recorded(LeanTracerProvider, exceptions)
    stacktraces = [
        [str((event.attributes or {})["exception.stacktrace"]) for event in span.events]
        for span in (sdk[0], lean[0])
    ]
    (sdk_trace,), (lean_trace,) = stacktraces
    assert "/opentelemetry/" in sdk_trace  # the SDK's generators come first
    frames = _FRAME.findall(lean_trace)
    assert frames == [__file__]  # the scene's own frame only
    assert lean_trace == without_sdk_frames(sdk_trace)
    assert lean_trace.endswith('raise ValueError("declined")\nValueError: declined\n')
    # the rest as the SDK records it: the exception's type and message, an ERROR status
    assert dict(lean[0].events[0].attributes or {}) | {"exception.stacktrace": ""} == dict(
        sdk[0].events[0].attributes or {}
    ) | {"exception.stacktrace": ""}
    assert lean[0].status.status_code is StatusCode.ERROR
    assert lean[0].status.description == "ValueError: declined"
    # the span that asked for neither records neither
    assert (lean[1].name, lean[1].events, lean[1].status.status_code) == (
        "quiet",
        (),
        StatusCode.UNSET,
    )


def test_the_values_the_sdk_cleans_are_cleaned_the_same() -> None:
    """What the comparison above covers, spelled out for the attributes that leave the
    plain dict: dropped, converted or truncated as BoundedAttributes does it."""
    (cleaned,) = recorded(LeanTracerProvider, values_the_sdk_cleans)
    assert list((cleaned.attributes or {}).items()) == [
        ("list", ("a", "b")),
        ("first", "kept"),
        ("none", None),
        ("dict", {"a": 1}),
        ("mixed", (1, "a")),
        ("after", "plain again"),
        ("bytes", b"raw"),
        ("numbers", (1, 2)),
        ("1", "a key named by its str"),
    ]
    assert cleaned.dropped_attributes == 2  # the empty key, the key 2
    (crowded,) = recorded(LeanTracerProvider, limits, LIMITS)
    # "a" went first for want of room, "c" when "e" came; "b", set again, moved to the end
    assert list((crowded.attributes or {}).items()) == [("d", 4), ("b", "longer"), ("e", 5)]
    assert crowded.dropped_attributes == 2
    assert (len(crowded.events), crowded.dropped_events) == (2, 1)
    assert (len(crowded.links), crowded.dropped_links) == (2, 1)


def test_an_ended_span_is_what_the_processors_get_and_it_refuses_changes() -> None:
    (ended,) = recorded(LeanTracerProvider, changes_after_the_end)
    assert (ended.name, dict(ended.attributes or {}), ended.events, ended.links) == (
        "ended",
        {"a": 1},
        (),
        (),
    )
    assert ended.status.status_code is StatusCode.UNSET


def children_of_kept_parents(tracer: trace.Tracer) -> None:
    # a parent from another service, with a trace state and a random trace id, and a local one
    random = SpanContext(
        REMOTE.trace_id,
        REMOTE.span_id,
        True,
        TraceFlags(TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID),
        REMOTE.trace_state,
    )
    for remote in (REMOTE, random):
        context = trace.set_span_in_context(NonRecordingSpan(remote))
        with tracer.start_as_current_span("handle", context=context, kind=SpanKind.CONSUMER):
            tracer.start_span("INSERT orders", kind=SpanKind.CLIENT, attributes={"n": 1}).end()


def test_children_of_kept_parents_get_what_the_services_sampler_would_give_them() -> None:
    sdk = recorded(TracerProvider, children_of_kept_parents, sampler=configured_sampler())
    lean = recorded(LeanTracerProvider, children_of_kept_parents, sampler=configured_sampler())
    contexts = [(s.name, s.context, s.parent, dict(s.attributes or {})) for s in lean]
    assert contexts == [(s.name, s.context, s.parent, dict(s.attributes or {})) for s in sdk]
    assert [span.context.trace_flags for span in lean] == [
        TraceFlags.SAMPLED,
        TraceFlags.SAMPLED,
        TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID,
        TraceFlags.SAMPLED | TraceFlags.RANDOM_TRACE_ID,
    ]
    assert all(span.context.trace_state == REMOTE.trace_state for span in lean)


def children_of_unkept_parents(tracer: trace.Tracer) -> list[trace.Span]:
    """A consumer span under a parent from another service that is not kept (with a trace
    state; and again with a random trace id), and a client span under it: the spans made."""
    spans: list[trace.Span] = []
    for flags in (TraceFlags.DEFAULT, TraceFlags.RANDOM_TRACE_ID):
        remote = SpanContext(
            REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(flags), REMOTE.trace_state
        )
        context = trace.set_span_in_context(NonRecordingSpan(remote))
        with tracer.start_as_current_span(
            "handle", context=context, kind=SpanKind.CONSUMER
        ) as handle:
            spans.append(handle)
            spans.append(tracer.start_span("INSERT orders", kind=SpanKind.CLIENT))
            spans[-1].end()
    return spans


def test_children_of_unkept_parents_get_what_the_services_sampler_would_give_them_unasked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def made(provider: type[TracerProvider], sampler: QuietSampler) -> list[tuple[Any, ...]]:
        spans = children_of_unkept_parents(provider(sampler=sampler).get_tracer("tienda"))
        assert all(type(span) is NonRecordingSpan for span in spans)
        # all but the span id, which is drawn at random
        return [span.get_span_context()[:1] + span.get_span_context()[2:] for span in spans]

    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    asked: list[str] = []
    sampler = configured_sampler()
    ask = sampler.should_sample

    def asked_for(parent: Any, trace_id: int, name: str, *args: Any, **kwargs: Any) -> Any:
        asked.append(name)
        return ask(parent, trace_id, name, *args, **kwargs)

    monkeypatch.setattr(sampler, "should_sample", asked_for)
    sdk = made(TracerProvider, sampler)
    assert asked == ["handle", "INSERT orders"] * 2  # the SDK's tracer asks for every span
    asked.clear()
    assert sampler.drops_children_of_unkept_parents
    assert made(LeanTracerProvider, sampler) == sdk
    assert asked == []
    assert [flags for _, _, flags, _, _ in sdk] == [
        TraceFlags.DEFAULT,
        TraceFlags.DEFAULT,
        TraceFlags.RANDOM_TRACE_ID,
        TraceFlags.RANDOM_TRACE_ID,
    ]
    assert all(state == REMOTE.trace_state and valid for _, _, _, state, valid in sdk)


def test_a_sampler_that_records_nothing_yet_is_asked_even_under_a_kept_parent() -> None:
    sampler = configured_sampler(recording=False)
    provider = LeanTracerProvider(sampler=sampler)
    tracer = provider.get_tracer("tienda")
    context = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    assert type(tracer.start_span("not yet", context=context)) is NonRecordingSpan
    sampler.recording = True  # what record_spans does
    assert type(tracer.start_span("now", context=context)) is LeanSpan


def test_a_sampler_that_drops_gets_non_recording_spans_with_ids() -> None:
    provider = LeanTracerProvider(sampler=ALWAYS_OFF)
    span = provider.get_tracer("tienda").start_span("dropped")
    assert type(span) is NonRecordingSpan
    assert span.get_span_context().is_valid
    assert not span.get_span_context().trace_flags.sampled


def test_a_disabled_provider_gives_the_sdks_no_op_tracer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    tracer = LeanTracerProvider().get_tracer("tienda")
    assert type(tracer) is trace.NoOpTracer


def test_a_sampler_that_is_not_parent_based_is_asked_for_every_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # traceidratio 0 keeps no trace, whatever the parent decided
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    sampler = configured_sampler()
    assert not sampler.keeps_children_of_kept_parents
    tracer = LeanTracerProvider(sampler=sampler).get_tracer("tienda")
    context = trace.set_span_in_context(NonRecordingSpan(REMOTE))
    assert type(tracer.start_span("dropped", context=context)) is NonRecordingSpan


def _never(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a BatchSpanProcessor's hook was called")


@pytest.mark.parametrize("scene", SCENES, ids=lambda scene: scene.__name__)
def test_batch_processors_get_what_the_sdk_gives_them_without_their_empty_hooks(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The services' one processor is a BatchSpanProcessor: a sampled span goes straight to
    its queue when it ends, and its on_start, _on_ending and on_end, which do nothing but
    that, are not called; what it exports is what it exports from the SDK's provider."""

    def batched(provider_class: type[TracerProvider]) -> list[ReadableSpan]:
        kept = InMemorySpanExporter()
        provider = provider_class(
            resource=Resource.create({"service.name": "order_service"}),
            sampler=ParentBasedTraceIdRatio(1.0),
            id_generator=CountingIds(),
        )
        provider.add_span_processor(BatchSpanProcessor(kept))
        try:
            scene(provider.get_tracer("tienda", "0.1.0"))
            provider.force_flush()
            return list(kept.get_finished_spans())
        finally:
            provider.shutdown()

    sdk = batched(TracerProvider)
    for hook in ("on_start", "_on_ending", "on_end"):
        monkeypatch.setattr(BatchSpanProcessor, hook, _never)
    lean = batched(LeanTracerProvider)
    assert sdk or scene is sampled_out
    assert timeless(lean) == timeless(sdk)


class RecordOnly(Sampler):
    """Records every span and samples none: a BatchSpanProcessor exports none of them."""

    def should_sample(self, *_args: object, **_kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


class Hooks(SpanProcessor):
    """A processor that notes each of its hooks called, with the span's name."""

    def __init__(self) -> None:
        self.called: list[tuple[str, str]] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        self.called.append(("on_start", span.name))

    def _on_ending(self, span: Span) -> None:
        self.called.append(("_on_ending", span.name))

    def on_end(self, span: ReadableSpan) -> None:
        self.called.append(("on_end", span.name))


def test_a_span_recorded_but_not_sampled_stays_out_of_the_batch_processors_queue() -> None:
    kept, hooks = InMemorySpanExporter(), Hooks()
    provider = LeanTracerProvider(sampler=RecordOnly())
    provider.add_span_processor(BatchSpanProcessor(kept))
    tracer = provider.get_tracer("tienda")
    with tracer.start_as_current_span("recorded") as span:
        assert span.is_recording()
    # a processor of another kind, added later, gets every hook of the spans after it
    provider.add_span_processor(hooks)
    tracer.start_span("after").end()
    provider.force_flush()
    assert kept.get_finished_spans() == ()
    assert hooks.called == [("on_start", "after"), ("_on_ending", "after"), ("on_end", "after")]
    provider.shutdown()


def test_the_current_span_context_is_what_the_api_reads() -> None:
    provider = LeanTracerProvider(sampler=ParentBasedTraceIdRatio(1.0))
    tracer = provider.get_tracer("tienda")
    assert current_span_context() == trace.get_current_span().get_span_context()
    assert not in_sampled_trace()  # outside any trace
    with tracer.start_as_current_span("kept") as kept:
        assert current_span_context() == kept.get_span_context()
        assert in_sampled_trace()
        unkept = SpanContext(REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(0))
        with trace.use_span(NonRecordingSpan(unkept)):
            assert current_span_context() == trace.get_current_span().get_span_context()
            assert not in_sampled_trace()
        assert current_span_context() == kept.get_span_context()
    assert current_span_context() == INVALID_SPAN_CONTEXT


def test_a_current_span_left_in_another_context_is_logged_as_the_sdk_logs_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its token belongs to the context it was entered in: the SDK's start_as_current_span
    logs the failed detach and goes on (the span still ends); so does CurrentSpan."""
    for provider_class in (TracerProvider, LeanTracerProvider):
        kept = InMemorySpanExporter()
        provider = provider_class()
        provider.add_span_processor(SimpleSpanProcessor(kept))
        block = provider.get_tracer("tienda").start_as_current_span("crossing")
        contextvars.copy_context().run(block.__enter__)
        caplog.clear()
        block.__exit__(None, None, None)
        assert [record.getMessage() for record in caplog.records] == ["Failed to detach context"]
        assert [span.name for span in kept.get_finished_spans()] == ["crossing"]
