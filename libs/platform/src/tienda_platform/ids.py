"""Globally unique, time-ordered identifiers (UUIDv7)."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> str:
    """A new UUIDv7 as its canonical string."""
    return str(uuid6.uuid7())


def is_valid_id(value: str) -> bool:
    """True when value is a canonical UUID string."""
    try:
        return str(uuid.UUID(value)) == value
    except (ValueError, AttributeError, TypeError):
        return False
