"""JSON logs carry ECS fields and never a secret."""

from __future__ import annotations

import io
import json
import logging

import pytest
from loguru import logger
from tienda_platform.logging import configure_logging, redact

pytestmark = pytest.mark.unit


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_records_are_ecs_json_with_business_ids() -> None:
    stream = io.StringIO()
    configure_logging(service_name="svc", service_version="1.2.3", stream=stream)

    logger.info("order placed", order_id="o-1", user_id="u-1")

    (doc,) = lines(stream)
    assert doc["message"] == "order placed"
    assert doc["log.level"] == "info"
    assert doc["service.name"] == "svc" and doc["service.version"] == "1.2.3"
    assert doc["order.id"] == "o-1" and doc["user.id"] == "u-1"
    assert "@timestamp" in doc and doc["event.dataset"] == "svc.log"


def test_secrets_never_reach_the_output() -> None:
    stream = io.StringIO()
    configure_logging(service_name="svc", service_version="1", stream=stream)
    jwt_like = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"

    logger.info(
        f"header Bearer {jwt_like} paid with tok_declined",
        password="hunter2-secret",
        headers={"authorization": "Bearer abc"},
        refresh_token="rt_abcdefghijklmnopqrstu",
    )
    logging.getLogger("library").warning("library saw password=%s", "tok_ok")
    try:
        raise ValueError(f"bad token {jwt_like}")
    except ValueError:
        logger.exception("failed")

    output = stream.getvalue()
    for secret in (
        jwt_like,
        "tok_declined",
        "hunter2-secret",
        "abc",
        "rt_abcdefghijklmnopqrstu",
        "tok_ok",
    ):
        assert secret not in output
    docs = lines(stream)
    assert docs[1]["log.logger"] == "library"
    assert docs[2]["error.type"] == "ValueError" and "error.stack_trace" in docs[2]


def test_a_secret_formatted_into_the_message_is_taken_out_of_it() -> None:
    """loguru formats keyword arguments into the message before the sink sees the record:
    the values of secret-looking keys are taken out of the message (and of an error's text),
    whatever they look like."""
    stream = io.StringIO()
    configure_logging(service_name="svc", service_version="1", stream=stream)

    logger.info("login as {email} with {password}", email="ana@example.com", password="pa55word")
    logger.warning("webhook {cfg}", cfg={"url": "https://hooks.example", "secret": "s3cr3t-x"})
    try:
        raise RuntimeError("upstream refused key k3y-value")
    except RuntimeError:
        logger.exception("call failed", api_key="k3y-value")

    output = stream.getvalue()
    for secret in ("pa55word", "s3cr3t-x", "k3y-value"):
        assert secret not in output
    docs = lines(stream)
    assert docs[0]["message"] == "login as ana@example.com with [REDACTED]"
    assert docs[2]["error.message"] == "upstream refused key [REDACTED]"


def test_redact_walks_nested_structures() -> None:
    assert redact({"a": [{"api_key": "k"}], "ok": "fine"}) == {
        "a": [{"api_key": "[REDACTED]"}],
        "ok": "fine",
    }
