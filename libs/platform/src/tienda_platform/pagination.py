"""Opaque page tokens (AIP-158): a versioned cursor; anything else is a bad request."""

from __future__ import annotations

import base64
import json
from typing import Any

from tienda_platform.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


def page_size(requested: int) -> int:
    """The page size to use: 20 when unset, at most 100; negative is an error."""
    if requested < 0:
        raise InvalidArgument.for_field("page_size", "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_page_token(cursor: dict[str, Any]) -> str:
    raw = json.dumps({"v": 1, **cursor}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The cursor in token, None for the first page; INVALID_ARGUMENT when it is not ours."""
    if not token:
        return None
    try:
        padded = token + "=" * (-len(token) % 4)
        cursor = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if not isinstance(cursor, dict) or cursor.get("v") != 1:
            raise ValueError
        if not all(isinstance(cursor.get(k), str) for k in keys):
            raise ValueError
    except (ValueError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise InvalidArgument.for_field("page_token", "not a page token from this API") from None
    return {k: cursor[k] for k in keys}
