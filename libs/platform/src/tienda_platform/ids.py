"""Globally unique, time-ordered identifiers (UUIDv7, RFC 9562).

An id carries the Unix time in milliseconds it was made at, then a 42-bit counter, then 32
random bits (RFC 9562, section 6.2, method 1, as CPython 3.14's uuid.uuid7 lays it out). The
counter starts at a random value in each new millisecond, with its top bit clear, and counts
up for every further id of that millisecond: the ids of one process sort in the order they
were made, and their timestamps stay the clock's. A millisecond would need 2**41 ids to use
up the counter; only then, or when the clock steps back, does an id take the timestamp of
the one before it (plus one millisecond on overflow), so that the order holds.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_COUNTER_BITS = 42
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1
_VERSION_7 = 0x7 << 76
_VARIANT_RFC_9562 = 0b10 << 62

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def _fresh_counter() -> int:
    # 41 random bits: the top bit of the 42 stays clear, room for the millisecond's other ids
    return int.from_bytes(os.urandom(6)) >> 7


def uuid7_int() -> int:
    """The 128 bits of a new UUIDv7."""
    global _last_ms, _counter
    now_ms = time.time_ns() // 1_000_000
    with _lock:
        if now_ms > _last_ms:
            _last_ms, _counter = now_ms, _fresh_counter()
        elif _counter < _COUNTER_MAX:
            _counter += 1  # the same millisecond, or the clock stepped back
        else:
            _last_ms, _counter = _last_ms + 1, _fresh_counter()
        timestamp_ms, counter = _last_ms, _counter
    return (
        (timestamp_ms & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | (counter >> 30) << 64  # the counter's top 12 bits, in rand_a
        | _VARIANT_RFC_9562
        | (counter & 0x3FFF_FFFF) << 32  # its other 30, at the head of rand_b
        | int.from_bytes(os.urandom(4))
    )


def new_id() -> str:
    """A new UUIDv7 as its canonical string."""
    digits = f"{uuid7_int():032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def is_valid_id(value: str) -> bool:
    """True when value is a canonical UUID string."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False
