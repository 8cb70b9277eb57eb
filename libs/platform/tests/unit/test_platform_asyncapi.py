"""The topology is consistent and the AsyncAPI document shows all of it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from events.v1 import events_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from jsonschema import Draft202012Validator
from tienda_contracts.topology import EVENT_TYPES, STREAMS, SUBSCRIPTIONS, dead_letter_stream
from tienda_platform.asyncapi import build_asyncapi
from tienda_platform.events import build_envelope

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


def _filled(message: Message) -> Message:
    """message with every field set (scalars, enums, repeated and nested messages)."""
    for field in message.DESCRIPTOR.fields:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            if field.is_repeated:
                _filled(getattr(message, field.name).add())
            else:
                _filled(getattr(message, field.name))
            continue
        if field.type == FieldDescriptor.TYPE_ENUM:
            value: object = field.enum_type.values[-1].number
        elif field.type == FieldDescriptor.TYPE_STRING:
            value = f"{field.name}-value"
        elif field.type == FieldDescriptor.TYPE_BOOL:
            value = True
        elif field.type == FieldDescriptor.TYPE_BYTES:
            value = b"\x01\x02"
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            value = 1.5
        else:
            value = 7
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)
    return message


def _validator(document: dict[str, Any], message: str) -> Draft202012Validator:
    # the document is the root, so that its "#/components/..." references resolve
    return Draft202012Validator({**document, "$ref": f"#/components/messages/{message}/payload"})


def test_each_event_type_is_a_typed_message_its_events_match() -> None:
    document = build_asyncapi("1")
    for name, event in EVENT_TYPES.items():
        envelope = build_envelope(
            source="test", event_type=name, subject="things/1", payload=_filled(event.payload())
        )
        as_json = json_format.MessageToDict(envelope, preserving_proto_field_name=True)
        errors = list(_validator(document, name).iter_errors(as_json))
        assert not errors, (name, [e.message for e in errors])
        # and only them: the same event under another type's message is refused
        other = next(n for n in EVENT_TYPES if n != name)
        assert list(_validator(document, other).iter_errors(as_json)), (name, other)
    for channel, spec in document["channels"].items():
        assert spec["messages"], channel
        for reference in spec["messages"].values():
            assert (
                reference["$ref"].removeprefix("#/components/messages/")
                in (document["components"]["messages"])
            )


def test_a_field_of_the_wrong_type_does_not_match() -> None:
    document = build_asyncapi("1")
    as_json = json_format.MessageToDict(
        build_envelope(
            source="test",
            event_type="order.created",
            subject="orders/1",
            payload=_filled(events_pb2.OrderCreated()),
        ),
        preserving_proto_field_name=True,
    )
    as_json["data"]["lines"] = "not a list"
    assert list(_validator(document, "order.created").iter_errors(as_json))


def test_each_stream_has_its_dead_letter_channel() -> None:
    document = build_asyncapi("1")
    for stream in STREAMS:
        channel = document["channels"][f"{stream}:dead-letter"]
        assert channel["address"] == dead_letter_stream(stream)
        assert document["operations"][f"{stream}:dead-letter"]["action"] == "send"
    required = document["components"]["schemas"]["tienda.DeadLetter"]["required"]
    assert set(required) == {"envelope", "error", "group", "stream", "entry_id", "time"}
