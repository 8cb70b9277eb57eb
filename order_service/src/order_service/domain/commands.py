"""Commands: what a caller asks order_service to do."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestedItem:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class CreateOrder:
    items: tuple[RequestedItem, ...]
    payment_token: str = field(repr=False)


@dataclass(frozen=True)
class CancelOrder:
    order_id: str
