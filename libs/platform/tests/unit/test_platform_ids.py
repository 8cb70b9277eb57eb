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


def test_new_ids_are_canonical_uuid7_with_the_time_they_were_made() -> None:
    before = time.time_ns() // 1_000_000
    value = new_id()
    after = time.time_ns() // 1_000_000
    parsed = uuid.UUID(value)
    assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122)
    assert str(parsed) == value and is_valid_id(value)
    assert before <= _timestamp_ms(value) <= after


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


def test_a_burst_of_ids_keeps_the_clocks_time() -> None:
    """Thousands of ids a millisecond: a counter orders them, not a timestamp pushed ahead
    of the clock one millisecond per id."""
    before = time.time_ns() // 1_000_000
    ids = [new_id() for _ in range(20_000)]
    after = time.time_ns() // 1_000_000
    assert sorted(ids) == ids and len(set(ids)) == len(ids)
    assert all(before <= _timestamp_ms(i) <= after for i in ids)


def test_ids_stay_in_order_when_the_clock_steps_back(monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time_ns()
    clock = iter([now, now + 5_000_000, now - 60_000_000_000, now + 6_000_000])
    monkeypatch.setattr(time, "time_ns", lambda: next(clock))
    ids = [new_id() for _ in range(4)]
    assert sorted(ids) == ids
    stamps = [_timestamp_ms(i) for i in ids]
    # a minute back: the id keeps the last timestamp, with the next count
    assert stamps == [now // 10**6, now // 10**6 + 5, now // 10**6 + 5, now // 10**6 + 6]


def test_a_used_up_counter_moves_to_the_next_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    from tienda_platform import ids

    frozen = time.time_ns() + 10**12  # later than any id made so far
    monkeypatch.setattr(time, "time_ns", lambda: frozen)
    first = new_id()
    monkeypatch.setattr(ids, "_counter", ids._COUNTER_MAX)
    second, third = new_id(), new_id()
    assert first < second < third
    assert _timestamp_ms(second) == _timestamp_ms(first) + 1 == frozen // 10**6 + 1
    assert _timestamp_ms(third) == _timestamp_ms(second)
