"""OTEL_PYTHON_DISABLED_INSTRUMENTATIONS leaves out the spans of SQL statements (`sqlalchemy`)
and of Redis commands (`redis`), read once per process as opentelemetry-instrument reads it:
each case runs in a process of its own, on a real SQLite database and a real Redis."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.integration

# an engine hooked before spans are recorded, one after, and a Redis command, all in a kept
# trace; prints the names of the spans recorded
_SCRIPT = """
import asyncio
import sys

import redis.asyncio as redis
import sqlalchemy as sa
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tienda_platform import statement_spans, telemetry
from tienda_platform.database import create_engine


async def main() -> None:
    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    early = create_engine("sqlite+aiosqlite://")
    statement_spans.instrument_engine(early)
    exporter = InMemorySpanExporter()
    telemetry.record_spans(SimpleSpanProcessor(exporter))
    late = create_engine("sqlite+aiosqlite://")
    statement_spans.instrument_engine(late)
    client = redis.Redis.from_url(sys.argv[1])
    with telemetry.tracer.start_as_current_span("request"):
        for engine in (early, late):
            async with engine.connect() as connection:
                await connection.execute(sa.text("SELECT 1"))
        await client.ping()
    await client.aclose()
    print(" ".join(sorted(span.name for span in exporter.get_finished_spans())))


asyncio.run(main())
"""


def spans_recorded(redis_url: str, disabled: str | None) -> tuple[list[str], str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("OTEL_")}
    if disabled is not None:
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = disabled
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, redis_url],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split(), done.stderr


@pytest.mark.parametrize(
    ("disabled", "spans"),
    [
        (None, ["PING", "SELECT", "SELECT", "request"]),
        ("", ["PING", "SELECT", "SELECT", "request"]),
        ("sqlalchemy", ["PING", "request"]),
        ("redis", ["SELECT", "SELECT", "request"]),
        (" redis , sqlalchemy ", ["request"]),
        ("*", ["request"]),
    ],
)
def test_the_variable_leaves_out_the_statements_and_commands_of_the_instrumentations_it_names(
    embedded_redis: Any, disabled: str | None, spans: list[str]
) -> None:
    recorded, _ = spans_recorded(str(embedded_redis.url), disabled)
    assert recorded == spans


def test_names_of_other_instrumentations_are_reported_and_their_spans_stay(
    embedded_redis: Any,
) -> None:
    recorded, log = spans_recorded(str(embedded_redis.url), "grpc_aio_client,sqlalchemy,asgi")
    assert recorded == ["PING", "request"]
    assert "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS names asgi, grpc_aio_client" in log
    assert "can leave out the spans of sqlalchemy and redis only" in log
