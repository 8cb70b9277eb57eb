"""Errors of the catalogue and reservation domain, each a platform error with its gRPC status."""

from __future__ import annotations

from tienda_platform.errors import Aborted, AlreadyExists, FailedPrecondition, NotFound


class ProductNotFound(NotFound):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id} not found")


class ProductChanged(Aborted):
    """A conditional update whose etag is not the product's current one."""

    def __init__(self, product_id: str) -> None:
        super().__init__(
            f"product {product_id} changed since the etag given was read; read it again"
        )


class SkuAlreadyExists(AlreadyExists):
    def __init__(self, sku: str) -> None:
        super().__init__(f"a product with sku {sku} already exists")


class ReservationAlreadyExists(AlreadyExists):
    """Another request stored a reservation for this order first (a unique-key race)."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"a reservation for order {order_id} already exists")


class ReservationNotCommittable(FailedPrecondition):
    """Only a RESERVED (or already COMMITTED) reservation can be committed."""

    def __init__(self, order_id: str, status: str | None) -> None:
        state = "missing" if status is None else status
        super().__init__(f"reservation of order {order_id} is {state}; only RESERVED commits")
