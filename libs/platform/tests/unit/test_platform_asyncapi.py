"""The topology is consistent and the AsyncAPI document shows all of it."""

from __future__ import annotations

import json

import pytest
from tienda_contracts.topology import EVENT_TYPES, STREAMS, SUBSCRIPTIONS
from tienda_platform.asyncapi import build_asyncapi

pytestmark = pytest.mark.unit


def test_every_subscribed_event_is_declared_on_that_stream() -> None:
    for sub in SUBSCRIPTIONS:
        for name in sub.event_types:
            assert EVENT_TYPES[name].stream == sub.stream, (sub.group, name)


def test_the_asyncapi_document_lists_every_stream_group_and_event() -> None:
    document = build_asyncapi("1.2.3")
    assert document["asyncapi"].startswith("3.")
    assert document["info"]["version"] == "1.2.3"
    text = json.dumps(document)
    for stream in STREAMS:
        assert stream in text
    for sub in SUBSCRIPTIONS:
        assert f"{sub.stream}:{sub.group}" in document["channels"]
    for name, event in EVENT_TYPES.items():
        assert name in text and event.payload.DESCRIPTOR.full_name in text
