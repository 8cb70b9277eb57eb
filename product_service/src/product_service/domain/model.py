"""Products and stock reservations, and the rules their inputs must follow."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from tienda_platform.errors import Validator
from tienda_platform.ids import is_valid_id

SKU_MAX_LENGTH = 64
NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 5000
PRICE_CENTS_MIN = 1
PRICE_CENTS_MAX = 10_000_000_00
STOCK_MIN = 0
STOCK_MAX = 1_000_000
RESERVATION_MAX_ITEMS = 50
QUANTITY_MIN = 1
QUANTITY_MAX = 1000
BATCH_GET_MAX_IDS = 100
# Why a reservation was rejected, as stored: "insufficient stock for <sku>" and the like.
REASON_MAX_LENGTH = 255
# Canonical UUID strings are 36 characters; the bound keeps hostile input cheap to reject.
ID_MAX_LENGTH = 36

_SKU = re.compile(r"[A-Za-z0-9._-]+")
# Line breaks and tabs are fine in a description; other control characters (NUL above all,
# which PostgreSQL cannot store) are not.
_DESCRIPTION_CONTROLS_ALLOWED = frozenset("\n\r\t")

UPDATABLE_FIELDS = ("sku", "name", "description", "price_cents", "stock")


@dataclass(frozen=True)
class Product:
    id: str
    sku: str
    name: str
    description: str
    price_cents: int
    stock: int
    create_time: datetime
    update_time: datetime

    @property
    def etag(self) -> str:
        """A digest of the product's values, stock and update time included (AIP-154): two
        reads give the same etag only if nothing of the product changed in between."""
        digest = hashlib.blake2b(digest_size=12)
        for value in (
            self.id,
            self.sku,
            self.name,
            self.description,
            self.price_cents,
            self.stock,
            round(self.update_time.timestamp() * 1_000_000),  # however its zone is written
        ):
            text = str(value)
            digest.update(f"{len(text)}:{text};".encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class ProductFields:
    """The fields of a product an admin writes, already validated and normalised."""

    sku: str
    name: str
    description: str
    price_cents: int
    stock: int


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    REJECTED = "REJECTED"
    RELEASED = "RELEASED"
    COMMITTED = "COMMITTED"

    @property
    def holds_stock(self) -> bool:
        """RESERVED and COMMITTED reservations have taken stock that a release gives back."""
        return self in (ReservationStatus.RESERVED, ReservationStatus.COMMITTED)


@dataclass(frozen=True)
class StockItem:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    """The stock taken for one order; at most one per order id."""

    order_id: str
    status: ReservationStatus
    reason: str
    items: tuple[StockItem, ...]
    create_time: datetime
    update_time: datetime


def _has_control_characters(text: str, allowed: frozenset[str] = frozenset()) -> bool:
    return any(unicodedata.category(c) == "Cc" and c not in allowed for c in text)


def check_id(validator: Validator, value: str, field_name: str) -> None:
    """Record a violation unless value is a canonical UUID."""
    if not value:
        validator.check(False, field_name, "is required")
    else:
        validator.check(
            len(value) <= ID_MAX_LENGTH and is_valid_id(value), field_name, "must be a UUID"
        )


def check_sku(validator: Validator, sku: str) -> None:
    if not sku:
        validator.check(False, "sku", "is required")
    elif len(sku) > SKU_MAX_LENGTH:
        validator.check(False, "sku", f"must be at most {SKU_MAX_LENGTH} characters")
    else:
        validator.check(
            _SKU.fullmatch(sku) is not None,
            "sku",
            "may contain only letters, digits, '.', '_' and '-'",
        )


def check_name(validator: Validator, name: str) -> str:
    """Record what is wrong with name and return it trimmed."""
    trimmed = name.strip()
    if not trimmed:
        validator.check(False, "name", "is required")
    elif len(trimmed) > NAME_MAX_LENGTH:
        validator.check(False, "name", f"must be at most {NAME_MAX_LENGTH} characters")
    else:
        validator.check(
            not _has_control_characters(trimmed), "name", "must not contain control characters"
        )
    return trimmed


def check_description(validator: Validator, description: str) -> str:
    """Record what is wrong with description and return it trimmed."""
    trimmed = description.strip()
    if len(trimmed) > DESCRIPTION_MAX_LENGTH:
        validator.check(
            False, "description", f"must be at most {DESCRIPTION_MAX_LENGTH} characters"
        )
    else:
        validator.check(
            not _has_control_characters(trimmed, _DESCRIPTION_CONTROLS_ALLOWED),
            "description",
            "must not contain control characters other than line breaks and tabs",
        )
    return trimmed


def check_price_cents(validator: Validator, price_cents: int) -> None:
    validator.check(
        PRICE_CENTS_MIN <= price_cents <= PRICE_CENTS_MAX,
        "price_cents",
        f"must be between {PRICE_CENTS_MIN} and {PRICE_CENTS_MAX}",
    )


def check_stock(validator: Validator, stock: int) -> None:
    validator.check(
        STOCK_MIN <= stock <= STOCK_MAX, "stock", f"must be between {STOCK_MIN} and {STOCK_MAX}"
    )


def check_stock_items(validator: Validator, items: Sequence[StockItem]) -> None:
    """Record what is wrong with the items of a reservation request."""
    if not items:
        validator.check(False, "items", "at least one item is required")
        return
    if len(items) > RESERVATION_MAX_ITEMS:
        validator.check(False, "items", f"at most {RESERVATION_MAX_ITEMS} items are allowed")
        return
    seen: set[str] = set()
    for index, item in enumerate(items):
        check_id(validator, item.product_id, f"items[{index}].product_id")
        validator.check(
            QUANTITY_MIN <= item.quantity <= QUANTITY_MAX,
            f"items[{index}].quantity",
            f"must be between {QUANTITY_MIN} and {QUANTITY_MAX}",
        )
        validator.check(
            item.product_id not in seen,
            f"items[{index}].product_id",
            "appears more than once; combine the quantities",
        )
        seen.add(item.product_id)
