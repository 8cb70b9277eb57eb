"""Client spans for SQL statements and Redis commands, inside the traces that are kept.

Installed once spans are recorded (telemetry.record_spans calls `install`): until something
receives spans, no statement or command could have one, and the hooks would cost every
statement and command a few microseconds. Statements get their spans from `StatementTracer`
(the SQLAlchemy instrumentation's attributes, for a fraction of its cost), and commands from
the OpenTelemetry Redis instrumentation, under a layer that lets it see only the commands of
a sampled trace. OTEL_PYTHON_DISABLED_INSTRUMENTATIONS leaves either out by its
instrumentation's name, `sqlalchemy` or `redis` (telemetry.disabled_instrumentations): about
half of an order's spans are its SQL statements'.
"""

from __future__ import annotations

import re
import weakref
from pathlib import PurePath
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, Status, StatusCode
from redis.asyncio.client import Pipeline as AsyncPipeline
from redis.client import Pipeline
from sqlalchemy import event
from sqlalchemy.engine import Engine, ExceptionContext

from tienda_platform.spans import in_sampled_trace
from tienda_platform.telemetry import LazyTracer, disabled_instrumentations, tracing_configured

# whether install() has run, and whether it hooked the engines; the engines waiting for it
_installed = False
_statements_traced = False
_untraced_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
_SQL_TRACER = LazyTracer("tienda.sql")


def install() -> None:
    """Hook the engines (instrument_engine's, before and after this call) and the Redis
    client, but for what OTEL_PYTHON_DISABLED_INSTRUMENTATIONS turns off. Idempotent."""
    global _installed, _statements_traced
    if _installed:
        return
    _installed = True
    disabled = disabled_instrumentations()
    if "redis" not in disabled:
        instrument_redis()
    if "sqlalchemy" not in disabled:
        _statements_traced = True
        for engine in list(_untraced_engines):
            StatementTracer(engine)
    _untraced_engines.clear()


def instrument_redis(tracer_provider: trace.TracerProvider | None = None) -> None:
    """The OpenTelemetry Redis instrumentation, with pipelines named as batches
    (name_redis_batches) and commands outside sampled traces left out
    (trace_redis_only_in_sampled_traces); on the global tracer provider unless given one."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    RedisInstrumentor().instrument(
        tracer_provider=tracer_provider, response_hook=name_redis_batches
    )
    trace_redis_only_in_sampled_traces()


def name_redis_batches(span: trace.Span, instance: Any, _response: Any) -> None:
    """Name a pipeline's span as the database semantic conventions name a batch operation:
    `BATCH XADD` when all its commands are one (the outbox relay's), `BATCH` otherwise; a
    pipeline of one command keeps that command's name. The Redis instrumentation names it
    after every command in it (`XADD XADD XADD ...`): a new name for every batch length in
    Jaeger's list of operations, and a name as long as the batch. Its length stays in
    `db.redis.pipeline_length`. (The instrumentation's response hook, called after each
    command and pipeline while its span is current.)"""
    if not isinstance(instance, _PIPELINES) or not isinstance(span, ReadableSpan):
        return  # a command of the client, or a span that is not recorded
    length = (span.attributes or {}).get("db.redis.pipeline_length")
    if not isinstance(length, int) or length < 2:
        return
    commands = span.name.split(" ")
    # a multi-word command (CLIENT SETINFO) makes more words than commands: a mixed batch
    same = len(commands) == length and len(set(commands)) == 1
    span.update_name(f"BATCH {commands[0]}" if same else "BATCH")


_PIPELINES = (AsyncPipeline, Pipeline)


def trace_redis_only_in_sampled_traces() -> None:
    """Let the Redis instrumentation see only the commands of a sampled trace.

    The others (consumers' XREADGROUP and XACK, the relays' and workers' polling: hundreds a
    second, outside any trace) would get no span: QuietSampler drops a client span outside any
    trace, and a parent-based sampler one under a parent that is not sampled. But the
    instrumentation formats every command's arguments into a statement before asking the
    sampler, which cost more than the traced commands. This layer, over the instrumentation's
    wrappers of redis.asyncio, calls the client directly when the current span is not sampled
    (the rule StatementTracer keeps for SQL). Idempotent."""
    import redis.asyncio.client as client
    from wrapt import FunctionWrapper

    for cls, name in (
        (client.Redis, "execute_command"),
        (client.Pipeline, "execute"),
        (client.Pipeline, "immediate_execute_command"),
    ):
        traced = cls.__dict__[name]
        if isinstance(traced, FunctionWrapper) and traced._self_wrapper is not _when_sampled:
            setattr(cls, name, FunctionWrapper(traced, _when_sampled))


def _when_sampled(wrapped: Any, _instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapped: the instrumentation's wrapper (bound); its __wrapped__, the client's method."""
    if in_sampled_trace():
        return wrapped(*args, **kwargs)
    return wrapped.__wrapped__(*args, **kwargs)


def instrument_engine(engine: Any) -> None:
    """A client span for each SQL statement of this SQLAlchemy engine (see StatementTracer),
    from the moment spans are recorded (telemetry.record_spans, before or after this call);
    none when OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names `sqlalchemy`."""
    if not tracing_configured():
        return
    if _statements_traced:
        StatementTracer(engine.sync_engine)
    elif not _installed:
        _untraced_engines.add(engine.sync_engine)


class StatementTracer:
    """Spans for the statements of one engine, with the attributes the OpenTelemetry
    SQLAlchemy instrumentation gives them (db.system, db.name, db.user, net.peer.name,
    net.peer.port and db.statement), for a fraction of its cost. A span is named as the
    database semantic conventions name it, `<operation> <table>` (`INSERT orders`, `SELECT
    order_summaries`), or `<operation> <database>` for a statement on no table; the
    database of a SQLite file is its name without the folder and suffix (`order`), so the
    names are the same wherever the data folder is.

    That instrumentation's EngineTracer, at every statement, reads the engine's URL into
    attributes again, makes the span current to add nothing under it, and records pool
    checkouts and checkins as metrics that nothing here exports; with dozens of statements
    per order, that was most of what tracing cost. Here the attributes are the engine's,
    computed once, and a statement makes a span only inside a trace that is kept: outside
    any trace QuietSampler would drop it, and under a parent that is not sampled the
    parent-based samplers would.
    """

    def __init__(self, engine: Engine, tracer: trace.Tracer | None = None) -> None:
        # the provider's own tracer (set by record_spans, which makes these): a call less
        # per statement than through the proxy
        self._tracer = tracer or _SQL_TRACER.resolved()
        url = engine.url
        database = url.database or ""
        if engine.dialect.name == "sqlite":
            database = PurePath(database).stem if database not in ("", ":memory:") else ""
        self._database = database
        self._attributes: dict[str, Any] = {
            key: value
            for key, value in {
                "db.system": engine.dialect.name,
                "db.name": url.database,
                "db.user": url.username,
                "net.peer.name": url.host,
                "net.peer.port": url.port,
            }.items()
            if value
        }
        self._names: dict[str, str] = {}
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)
        event.listen(engine, "handle_error", self._error)

    def _name(self, statement: str) -> str:
        name = self._names.get(statement)
        if name is None:
            text = _LEADING_COMMENT.sub("", statement)
            words = text.split(maxsplit=1)
            operation = words[0].upper() if words else ""
            table = _TABLE.search(text)
            target = table.group(1).strip('"`') if table else self._database
            name = " ".join(part for part in (operation, target) if part)
            if len(self._names) >= 1000:  # statements are few and cached; bound it anyway
                self._names.clear()
            self._names[statement] = name  # keyed by the statement as given
        return name

    def _before(
        self, _conn: Any, _cursor: Any, statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        if not in_sampled_trace():  # also false outside any trace
            return
        context._tienda_span = self._tracer.start_span(
            self._names.get(statement) or self._name(statement),
            kind=SpanKind.CLIENT,
            attributes={**self._attributes, "db.statement": statement},
        )

    @staticmethod
    def _after(
        _conn: Any, _cursor: Any, _statement: str, _params: Any, context: Any, *_: Any
    ) -> None:
        span = context.__dict__.pop("_tienda_span", None)
        if span is not None:
            span.end()

    @staticmethod
    def _error(error: ExceptionContext) -> None:
        context = error.execution_context
        span = context.__dict__.pop("_tienda_span", None) if context is not None else None
        if span is not None:
            span.set_status(Status(StatusCode.ERROR, str(error.original_exception)))
            span.end()


_LEADING_COMMENT = re.compile(r"^\s*/\*.*?\*/")
# the table a statement names first: INSERT INTO t, UPDATE t, DELETE FROM t, SELECT ... FROM t,
# CREATE TABLE t (a name, possibly quoted; a subquery's "FROM (" names none)
_TABLE = re.compile(
    r"\b(?:INTO|UPDATE|FROM|TABLE|JOIN)\s+((?:\"[^\"]+\"|`[^`]+`|\w+))", re.IGNORECASE
)
