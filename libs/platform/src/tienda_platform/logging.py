"""JSON logs, one object per line, with Elastic Common Schema field names.

Every record passes a redaction step: values of secret-looking keys, bearer tokens, JWTs and
payment tokens never reach the output. Standard-library logging is routed into the same sink.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import traceback
from datetime import UTC
from typing import Any, TextIO

from loguru import logger

REDACTED = "[REDACTED]"
_SECRET_KEY = re.compile(
    r"pass(word)?|secret|token|authorization|api[_-]?key|cookie|signature|private", re.I
)
_SECRET_TEXT = [
    re.compile(r"(?i)bearer\s+[A-Za-z0-9\-_.~+/]+=*"),
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),  # JWTs
    re.compile(r"\btok_[A-Za-z0-9_]+"),  # payment tokens
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]+"),  # webhook secrets
    re.compile(r"\brt_[A-Za-z0-9_-]{16,}"),  # refresh tokens
]
# Extra fields that carry ECS names of their own.
_ECS_EXTRA = {
    "order_id": "order.id",
    "product_id": "product.id",
    "user_id": "user.id",
    "event_id": "event.id",
    "event_type": "event.action",
    "correlation_id": "tienda.correlation_id",
    "method": "rpc.method",
    "http_method": "http.request.method",
    "route": "http.route",
    "status_code": "http.response.status_code",
    "duration_ms": "event.duration_ms",
}

_service: dict[str, str] = {"name": "tienda", "version": "0.0.0", "environment": "development"}


def redact_text(text: str) -> str:
    for pattern in _SECRET_TEXT:
        text = pattern.sub(REDACTED, text)
    return text


def redact(value: Any, key: str = "") -> Any:
    """A copy of value with every secret replaced by [REDACTED]."""
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _secret_values(value: Any, key: str = "") -> list[str]:
    """The values of secret-looking keys in value (a record's extra), to take out of the
    message too: loguru formats `logger.info("... {password}", password=p)` into the message
    before any sink sees the record. Values under 4 characters would take out too much."""
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in _secret_values(v, str(k))]
    if key and _SECRET_KEY.search(key) and value not in (None, ""):
        values = value if isinstance(value, list | tuple) else [value]
        return [text for v in values if len(text := str(v)) >= 4]
    return []


def _without(secrets: list[str], text: str) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_text(text)


def _trace_ids() -> dict[str, str]:
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - telemetry is optional for the library
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace.id": f"{context.trace_id:032x}", "span.id": f"{context.span_id:016x}"}


def ecs_document(record: dict[str, Any]) -> dict[str, Any]:
    """The ECS document for one loguru record, redacted."""
    secrets = _secret_values(record["extra"])
    doc: dict[str, Any] = {
        "@timestamp": record["time"].astimezone(UTC).isoformat(timespec="milliseconds"),
        "log.level": record["level"].name.lower(),
        "message": _without(secrets, record["message"]),
        "service.name": _service["name"],
        "service.version": _service["version"],
        "service.environment": _service["environment"],
        "event.dataset": f"{_service['name']}.log",
        "log.logger": record["name"],
        "process.pid": record["process"].id,
    }
    doc.update(_trace_ids())
    for key, value in record["extra"].items():
        doc[_ECS_EXTRA.get(key, f"labels.{key}")] = redact(value, key)
    if (exc := record["exception"]) is not None and exc.type is not None:
        doc["error.type"] = exc.type.__name__
        doc["error.message"] = _without(secrets, str(exc.value))
        doc["error.stack_trace"] = _without(
            secrets, "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
        )
    return doc


def _json_sink(stream: TextIO) -> Any:
    def write(message: Any) -> None:
        stream.write(json.dumps(ecs_document(message.record), default=str) + "\n")
        stream.flush()

    return write


class _InterceptHandler(logging.Handler):
    """Sends standard-library log records to loguru."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno

        def keep_name(entry: Any) -> None:
            entry["name"] = record.name

        logger.patch(keep_name).opt(exception=record.exc_info).log(level, record.getMessage())


def configure_logging(
    *,
    service_name: str,
    service_version: str,
    environment: str = "development",
    level: str = "INFO",
    stream: TextIO | None = None,
) -> None:
    """Log JSON lines to stdout (or `stream`) and route standard logging there too."""
    _service.update(name=service_name, version=service_version, environment=environment)
    logger.remove()
    logger.add(
        _json_sink(stream or sys.stdout), level=level.upper(), backtrace=False, diagnose=False
    )
    logging.basicConfig(handlers=[_InterceptHandler()], level=logging.INFO, force=True)
    # httpx and httpcore log every request's full URL (query string included) at INFO
    for noisy in ("sqlalchemy.engine", "aiosqlite", "asyncio", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
