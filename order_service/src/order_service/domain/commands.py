"""Commands: what a caller asks order_service to do."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RequestedItem:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class CreateOrder:
    items: tuple[RequestedItem, ...]
    payment_token: str = field(repr=False)
    # the client's id of this request (AIP-155): the same request again places no new order
    request_id: str = ""

    def fingerprint(self) -> str:
        """A digest of what the request asks for (its request_id aside), to tell a request
        sent again from another one reusing its request_id; the payment token only hashed."""
        digest = hashlib.blake2b(digest_size=16)
        for item in self.items:
            digest.update(f"{item.product_id}\x00{item.quantity}\x00".encode())
        digest.update(self.payment_token.encode())
        return digest.hexdigest()


@dataclass(frozen=True)
class CancelOrder:
    order_id: str
