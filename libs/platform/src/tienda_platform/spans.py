"""The SDK's tracer provider, whose spans take about a third of the SDK's CPU to record.

An order makes about sixty spans (gRPC calls on both sides, SQL statements, events published
and handled, saga steps), and the SDK's span spent most of its time on things these services
never use: it validates every attribute through a locked BoundedAttributes, builds an empty
BoundedList (a deque and a lock) for events and another for links, and at its end copies
itself into a ReadableSpan for the processors. `LeanSpan` is the SDK's `Span` (same class,
same methods, same limits) with those costs moved off the common path:

- attributes of the plain types (str, bool, int, float) are kept in a dict while the span
  stays within OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT and OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT; the
  first value that is not plain, or that a limit would cut, turns the dict into the SDK's
  BoundedAttributes, which from then on validates, truncates and counts drops as usual;
- the event and link lists are made when the first one is added;
- the processors are given the span itself when it ends: an ended span refuses changes, as
  the SDK's copy would;
- when every processor of the provider is the SDK's BatchSpanProcessor (the services' case:
  one, exporting over OTLP), whose on_start and _on_ending do nothing and whose on_end
  queues a sampled span, an ended span that is sampled goes straight to their queues,
  without the calls through the provider's SynchronousMultiSpanProcessor (nine per span);
- the fields every new span starts with (no status, no events, no links, no end) are read
  from the class until the span sets its own.

`LeanTracerProvider` is the SDK's `TracerProvider` (sampler, resource, limits, id generator,
processors, shutdown and flush all its own) whose tracers make `LeanSpan`s. Most spans are
children of kept spans, and a sampler that keeps all of those as the parent-based ones do
(with the parent's trace state, and the span's attributes) may say so by a true
`keeps_children_of_kept_parents`, as tienda_platform.telemetry's QuietSampler does: the
tracers then record such a child without asking the sampler and building its answer. With
one trace in ten kept, most spans are children of parents not kept, and a sampler that drops
all of those as the parent-based ones do (with the parent's trace state) may say so by a true
`drops_children_of_unkept_parents`: the tracers then give such a child its ids, unrecorded,
without asking. Their `start_as_current_span` gives a `CurrentSpan`: a class that does what
the SDK's two nested contextlib generators do (start the span, make it current, record an
exception, end it), without their machinery. Its tracers do not report the SDK's own span
metrics (OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED), which nothing here reads.

What each span records, and what the exporters send, is the SDK's to the byte but for one
thing: the stack trace of an exception that leaves a `start_as_current_span` block begins
where the caller raised it, without the two frames of the SDK's generators.
libs/platform/tests/unit/test_platform_spans.py plays the same scenes through both. LeanSpan
sets the fields of the SDK's Span and ReadableSpan, whose names are the SDK's own business
(and reads a SpanContext as the tuple it is): the SDK's version is pinned in
requirements.lock, and those tests fail if an upgrade renames one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from random import getrandbits
from time import time_ns
from typing import Any

from loguru import logger
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import (
    EventBase,
    Span,
    SpanLimits,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
    Tracer,
    TracerProvider,
)
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationInfo, InstrumentationScope
from opentelemetry.trace import (
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
)
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util import types

_PLAIN = (str, bool, int, float)
_SAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.SAMPLED)
_UNSAMPLED = trace_api.TraceFlags(trace_api.TraceFlags.DEFAULT)
_KEPT_RANDOM = trace_api.TraceFlags(
    trace_api.TraceFlags.SAMPLED | trace_api.TraceFlags.RANDOM_TRACE_ID
)
_UNKEPT_RANDOM = trace_api.TraceFlags(trace_api.TraceFlags.RANDOM_TRACE_ID)
_UNSET = Status(StatusCode.UNSET)
_SAMPLED_BIT = trace_api.TraceFlags.SAMPLED
_RANDOM_BIT = trace_api.TraceFlags.RANDOM_TRACE_ID
_SPAN_ID_MAX = 2**64 - 1


class LeanSpan(Span):
    """See the module's docstring. Made by LeanTracer, never directly."""

    # what every new span holds, read from the class until the span sets its own
    _start_time: int | None = None
    _end_time: int | None = None
    _status = _UNSET
    _events: Any = ()
    _links: Any = ()

    def __init__(
        self,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        resource: Resource,
        attributes: types.Attributes,
        links: Sequence[trace_api.Link],
        kind: SpanKind,
        span_processor: SpanProcessor,
        instrumentation_info: InstrumentationInfo | None,
        instrumentation_scope: InstrumentationScope | None,
        limits: SpanLimits,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        # Span.__init__ and ReadableSpan.__init__ are not called: these are the fields their
        # methods read
        self._name = name
        self._context = context
        self._kind = kind
        self._instrumentation_info = instrumentation_info
        self._instrumentation_scope = instrumentation_scope
        self._parent = parent
        self._resource = resource
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception
        self._span_processor = span_processor
        self._limits = limits
        self._lock = threading.Lock()
        self._attributes: Any = {}
        if attributes:
            if self._keeps_plain(attributes.items(), len(attributes)):
                self._attributes = dict(attributes)
            else:
                self._bounded()._set_items(attributes)
        if links:
            self._links = self._new_links(links)

    def get_span_context(self) -> SpanContext:
        # the SDK's passes it through typing.cast: a call more per read
        return self._context  # type: ignore[return-value]  # set by __init__, never None

    # attributes

    def set_attribute(self, key: str, value: types.AnyValue) -> None:
        with self._lock:
            if self._end_time is not None:
                logger.warning("Setting attribute on ended span.")
                return
            self._put(key, value)

    def set_attributes(self, attributes: Mapping[str, types.AnyValue]) -> None:
        with self._lock:
            if self._end_time is not None:
                logger.warning("Setting attribute on ended span.")
                return
            self._set_items(attributes)

    def _set_items(self, attributes: Mapping[str, types.AnyValue]) -> None:
        kept = self._attributes
        if type(kept) is dict and self._keeps_plain(
            attributes.items(), len(kept) + len(attributes)
        ):
            if kept:
                for key in attributes:
                    kept.pop(key, None)  # a key set again moves to the end, as in the SDK
            kept.update(attributes)
        else:
            self._bounded()._set_items(attributes)

    def _put(self, key: str, value: types.AnyValue) -> None:
        kept = self._attributes
        if type(kept) is dict and self._keeps_plain(((key, value),), len(kept) + (key not in kept)):
            kept.pop(key, None)
            kept[key] = value
        else:
            self._bounded()[key] = value

    def _keeps_plain(self, items: Iterable[tuple[str, types.AnyValue]], count: int) -> bool:
        """Whether the SDK's BoundedAttributes would keep these attributes as they are, with
        the span holding `count` attributes (at most: a key set again counts twice, which
        only sends it to BoundedAttributes): plain values under non-empty string keys,
        within the count and length limits."""
        limits = self._limits
        count_limit = limits.max_span_attributes
        if count_limit is not None and count > count_limit:
            return False
        length_limit = limits.max_span_attribute_length
        for key, value in items:
            kind = type(value)
            if kind is str:
                if length_limit is not None and len(value) > length_limit:  # type: ignore[arg-type]
                    return False
            elif kind not in _PLAIN:
                return False
            if type(key) is not str or not key:
                return False
        return True

    def _bounded(self) -> BoundedAttributes:
        if type(self._attributes) is dict:
            self._attributes = BoundedAttributes(
                self._limits.max_span_attributes,
                self._attributes,
                immutable=False,
                max_value_len=self._limits.max_span_attribute_length,
            )
        return self._attributes

    # events and links: the lists the SDK makes up front, made when first needed

    def _add_event(self, event: EventBase) -> None:
        with self._lock:
            if self._end_time is None:
                if type(self._events) is tuple:
                    self._events = BoundedList(self._limits.max_events)
                self._events.append(event)
                return
        logger.warning("Tried calling _add_event on an ended span.")

    def _add_link(self, link: trace_api.Link) -> None:
        with self._lock:
            if self._end_time is None:
                if type(self._links) is tuple:
                    self._links = BoundedList(self._limits.max_links)
                self._links.append(link)
                return
        logger.warning("Tried calling _add_link on an ended span.")

    # life

    def start(
        self, start_time: int | None = None, parent_context: context_api.Context | None = None
    ) -> None:
        with self._lock:
            if self._start_time is not None:
                logger.warning("Calling start() on a started span.")
                return
            self._start_time = start_time if start_time is not None else time_ns()
        self._span_processor.on_start(self, parent_context=parent_context)

    def end(self, end_time: int | None = None) -> None:
        with self._lock:
            if self._start_time is None:
                raise RuntimeError("Calling end() on a not started span.")
            if self._end_time is not None:
                logger.warning("Calling end() on an ended span.")
                return
            self._end_time = end_time if end_time is not None else time_ns()
            if type(self._attributes) is not dict:
                self._attributes._immutable = True
        processor = self._span_processor
        queues = _batch_queues(processor)
        if queues is None:
            processor._on_ending(self)
            processor.on_end(self)
        # BatchSpanProcessor.on_end's test: a span recorded but not sampled is not exported
        elif self._context[3] & _SAMPLED_BIT:  # type: ignore[index]
            for queue in queues:
                queue.emit(self)


class LeanTracer(Tracer):
    """The SDK's Tracer, whose start_span makes a LeanSpan."""

    def start_span(
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace_api.Span:
        links = links or ()
        current = _span_context_in(context)
        if not self._tracer_config.is_enabled:  # what self._is_enabled() answers
            return trace_api.NonRecordingSpan(context=current)
        # a SpanContext is the tuple (trace_id, span_id, is_remote, trace_flags, trace_state,
        # is_valid), read at once rather than through a property each
        trace_id, _, _, parent_flags, trace_state, parent_valid = current
        parent = current if parent_valid else None
        sampler: Any = self.sampler
        kept = parent_flags & _SAMPLED_BIT
        if parent_valid and getattr(
            sampler,
            "keeps_children_of_kept_parents" if kept else "drops_children_of_unkept_parents",
            False,
        ):
            # the sampler says it decides as the parent-based ones do under a parent: every
            # child of a kept parent recorded and sampled (with the span's attributes), every
            # child of a parent not kept dropped; either way with the parent's trace state
            id_generator = self.id_generator
            if type(id_generator) is RandomIdGenerator:
                # what its generate_span_id does, but for the call (an id of 0, which is
                # invalid, has a chance in 2**64, and the generator draws again then)
                span_id = getrandbits(64) or id_generator.generate_span_id()
            else:
                span_id = id_generator.generate_span_id()
            random = parent_flags & _RANDOM_BIT
            # what SpanContext() makes, without checking the parent's valid trace id again
            span_context = tuple.__new__(
                SpanContext,
                (
                    trace_id,
                    span_id,
                    False,
                    (_KEPT_RANDOM if random else _SAMPLED)
                    if kept
                    else (_UNKEPT_RANDOM if random else _UNSAMPLED),
                    trace_state,
                    0 < span_id <= _SPAN_ID_MAX,
                ),
            )
            recording = bool(kept)
        else:
            if parent is None:
                trace_id = self.id_generator.generate_trace_id()
                random_trace_id = self.id_generator.is_trace_id_random()
            else:
                random_trace_id = parent_flags.random_trace_id
            sampling = sampler.should_sample(context, trace_id, name, kind, attributes, links)
            flags = _SAMPLED if sampling.decision.is_sampled() else _UNSAMPLED
            if random_trace_id:
                flags = trace_api.TraceFlags(flags | trace_api.TraceFlags.RANDOM_TRACE_ID)
            attributes = sampling.attributes
            recording = sampling.decision.is_recording()
            span_context = SpanContext(
                trace_id,
                self.id_generator.generate_span_id(),
                is_remote=False,
                trace_flags=flags,
                trace_state=sampling.trace_state,
            )
        if not recording:
            return trace_api.NonRecordingSpan(context=span_context)
        # LeanSpan(...) would pass through Span.__new__, which only refuses to make a Span
        # itself: a call per span saved
        span = object.__new__(LeanSpan)
        span.__init__(  # type: ignore[misc]
            name,
            span_context,
            parent,
            self.resource,
            attributes,
            links,
            kind,
            self.span_processor,
            self.instrumentation_info,
            self._instrumentation_scope,
            self._span_limits,
            record_exception,
            set_status_on_exception,
        )
        # what span.start() does, without its lock: no one else holds the span yet
        span._start_time = start_time if start_time is not None else time_ns()
        processor = self.span_processor
        if _batch_queues(processor) is None:  # a BatchSpanProcessor's on_start does nothing
            processor.on_start(span, parent_context=context)
        return span

    def start_as_current_span(  # type: ignore[override]
        self,
        name: str,
        context: context_api.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace_api.Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> CurrentSpan:
        return CurrentSpan(
            self,
            (
                name,
                context,
                kind,
                attributes,
                links,
                start_time,
                record_exception,
                set_status_on_exception,
            ),
            end_on_exit,
        )


# the processors _batch_queues last looked at, and what it found (one tuple, replaced whole,
# so that another thread never reads one half of an update)
_last: tuple[Any, tuple[Any, ...] | None] = (object(), None)


def _batch_queues(processor: SpanProcessor) -> tuple[Any, ...] | None:
    """The queues of the SDK's BatchSpanProcessors, when `processor` is a provider's
    SynchronousMultiSpanProcessor holding those and nothing else; None otherwise (the span
    then goes through the processors' own on_start, _on_ending and on_end). The answer is
    kept until the provider's processors change (adding one makes a new tuple)."""
    global _last
    processors = getattr(processor, "_span_processors", None)
    last = _last
    if processors is last[0]:
        return last[1]
    queues = None
    if (
        type(processor) is SynchronousMultiSpanProcessor
        and processors
        and all(type(each) is BatchSpanProcessor for each in processors)
    ):
        queues = tuple(each._batch_processor for each in processors)
    _last = (processors, queues)
    return queues


def _runtime_context_var() -> ContextVar[context_api.Context] | None:
    """The ContextVar that OpenTelemetry's default runtime context keeps the current context
    in; None under any other runtime context (OTEL_PYTHON_CONTEXT names one). Reading and
    setting it directly does what context_api.get_current, attach and detach do, without
    their two calls each."""
    runtime = getattr(context_api, "_RUNTIME_CONTEXT", None)
    if type(runtime) is ContextVarsRuntimeContext:
        return runtime._current_context
    return None


_CONTEXT_VAR = _runtime_context_var()
_current_context: Callable[[], context_api.Context] = (
    context_api.get_current if _CONTEXT_VAR is None else _CONTEXT_VAR.get
)


def current_span_context() -> SpanContext:
    """trace.get_current_span().get_span_context(), in one call rather than five."""
    return _span_context_in(None)


def in_sampled_trace() -> bool:
    """current_span_context().trace_flags.sampled (false outside any trace), without the
    two properties' calls: asked before every SQL statement and Redis command."""
    return bool(_span_context_in(None)[3] & _SAMPLED_BIT)


def _span_context_in(context: context_api.Context | None) -> SpanContext:
    """trace_api.get_current_span(context).get_span_context(), in one call for the spans
    made here."""
    span = (_current_context() if context is None else context).get(_SPAN_KEY)
    if type(span) is LeanSpan or type(span) is NonRecordingSpan:
        return span._context  # type: ignore[return-value]
    if span is None or not isinstance(span, trace_api.Span):
        return INVALID_SPAN_CONTEXT
    return span.get_span_context()


class CurrentSpan:
    """What the SDK's `start_as_current_span` gives, as a class: on entering, a new span,
    made current; on leaving, the previous context back, an exception (but not a
    BaseException such as a cancellation) recorded on the span and its status set to ERROR
    as asked, and the span ended. The SDK writes it as two nested generators driven by
    contextlib, which cost a block a few microseconds more (`make bench` prints both). As
    the SDK's, it may decorate a function instead."""

    __slots__ = ("_arguments", "_end_on_exit", "_span", "_token", "_tracer")

    def __init__(self, tracer: LeanTracer, arguments: tuple[Any, ...], end_on_exit: bool) -> None:
        self._tracer = tracer
        self._arguments = arguments  # start_span's, in its order
        self._end_on_exit = end_on_exit

    def __enter__(self) -> trace_api.Span:
        span = self._tracer.start_span(*self._arguments)
        self._span = span
        # context_api.attach(context_api.set_value(_SPAN_KEY, span)), in no call but the set
        values = dict(_current_context())
        values[_SPAN_KEY] = span
        context = context_api.Context(values)
        var = _CONTEXT_VAR
        self._token = context_api.attach(context) if var is None else var.set(context)
        return span

    def __exit__(self, kind: Any, error: BaseException | None, traceback: Any) -> None:
        span = self._span
        try:
            var = _CONTEXT_VAR
            if var is None:
                context_api.detach(self._token)
            else:
                try:
                    var.reset(self._token)
                except (ValueError, RuntimeError):  # a token of another context, or used
                    context_api.detach(self._token)  # fails alike, and logs it as it does
            if isinstance(error, Exception) and span.is_recording():
                *_, record_exception, set_status_on_exception = self._arguments
                if record_exception:
                    span.record_exception(error)
                if set_status_on_exception:
                    span.set_status(
                        Status(StatusCode.ERROR, description=f"{type(error).__name__}: {error}")
                    )
        finally:
            if self._end_on_exit:
                span.end()

    def __call__(self, function: Any) -> Any:
        """As a decorator: the SDK's context manager does that (a span per call)."""
        sdk_context_manager: Any = Tracer.start_as_current_span
        return sdk_context_manager(self._tracer, *self._arguments, self._end_on_exit)(function)


class LeanTracerProvider(TracerProvider):
    """The SDK's TracerProvider, whose tracers are LeanTracers."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> trace_api.Tracer:
        tracer = super().get_tracer(*args, **kwargs)
        if type(tracer) is Tracer:  # not the NoOpTracer of a disabled provider
            # the same object, cached by the provider: the change happens once per tracer
            tracer.__class__ = LeanTracer
        return tracer


__all__ = [
    "CurrentSpan",
    "LeanSpan",
    "LeanTracer",
    "LeanTracerProvider",
    "current_span_context",
    "in_sampled_trace",
]
