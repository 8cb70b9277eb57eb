"""Event and entity ids are UUIDv7 (issue #3's envelope): unique, and ordered by creation."""

from __future__ import annotations

import time
import uuid

import pytest
from events.v1 import events_pb2
from tienda_platform.events import build_envelope
from tienda_platform.ids import is_valid_id, new_id

pytestmark = pytest.mark.unit


def _timestamp_ms(value: str) -> int:
    """The Unix time in milliseconds a UUIDv7 carries in its first 48 bits."""
    return uuid.UUID(value).int >> 80


def test_new_ids_are_canonical_uuid7_not_older_than_their_creation() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    parsed = uuid.UUID(value)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == value and is_valid_id(value)
    # no upper bound: uuid6 keeps ids of one process increasing by moving the timestamp of an
    # id made in the millisecond of the previous one a millisecond ahead of the clock
    assert _timestamp_ms(value) >= before


def test_envelopes_get_uuid7_ids() -> None:
    envelope = build_envelope(
        event_type="user.registered",
        source="auth_service",
        subject="users/u1",
        payload=events_pb2.UserRegistered(user_id="u1"),
    )
    assert uuid.UUID(envelope.id).version == 7


def test_successive_ids_sort_by_creation_time() -> None:
    # most of them made within the same millisecond as others
    ids = [new_id() for _ in range(1_000)]
    assert len(set(ids)) == len(ids)
    assert sorted(ids) == ids  # as strings, as a database index orders them
    assert sorted(ids, key=uuid.UUID) == ids
    timestamps = [_timestamp_ms(i) for i in ids]
    assert sorted(timestamps) == timestamps
