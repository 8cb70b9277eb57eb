"""Domain errors; each is a tienda_platform error, so it maps to its gRPC status."""

from __future__ import annotations

from tienda_platform.errors import AlreadyExists, FailedPrecondition, NotFound


class OrderNotFound(NotFound):
    """No such order, or one the caller may not see: both read the same."""

    def __init__(self, order_id: str) -> None:
        super().__init__(f"order {order_id} not found")


class ProductNotFound(NotFound):
    def __init__(self, product_id: str) -> None:
        super().__init__(f"product {product_id} not found")


class IllegalTransition(FailedPrecondition):
    """The order's status does not allow the requested change."""

    def __init__(self, status: str) -> None:
        super().__init__(f"order is already {status.lower()}")


class CustomerDeleted(FailedPrecondition):
    """A request made with the access token of a customer who has deleted their account since
    (the token may not have expired yet): no new order, no new webhook."""

    def __init__(self) -> None:
        super().__init__("the customer account was deleted")


class RequestIdReused(AlreadyExists):
    """A request_id the customer gave before, with a different request."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"request_id {request_id} was already used for a different order")


class RequestAlreadyPlaced(Exception):
    """Another transaction placed an order for the same request_id first (a storage conflict
    the service layer resolves by answering with that order)."""
