"""How an order is answered and how it ends, the same in both saga modes.

The (status, status_reason) pairs are the README's table ("Order sagas"), written out here
rather than imported from order_service: the end-to-end tests check the public contract, so a
changed reason fails them in both modes.
"""

from __future__ import annotations

import httpx
from e2e_support import User, submit_order, wait_terminal

PENDING = "ORDER_STATUS_PENDING"
CONFIRMED = ("ORDER_STATUS_CONFIRMED", "")
PAYMENT_DECLINED = ("ORDER_STATUS_CANCELLED", "payment declined")
PAYMENT_TIMED_OUT = ("ORDER_STATUS_CANCELLED", "payment timed out")
CANCELLED_BY_CUSTOMER = ("ORDER_STATUS_CANCELLED", "cancelled by customer")


def out_of_stock(sku: str) -> tuple[str, str]:
    """An order for more than the stock of the product with this SKU."""
    return ("ORDER_STATUS_REJECTED", f"insufficient stock for {sku}")


def outcome(order: dict) -> tuple[str, str]:
    """The order's (status, status_reason)."""
    return order["status"], order["status_reason"]


def submit_pending_order(
    api: httpx.Client, user: User, product_id: str, quantity: int = 1, payment_token: str = "tok_ok"
) -> dict:
    """POST /v1/orders for one product line, which must answer PENDING: the saga runs after."""
    order = submit_order(api, user, product_id, quantity, payment_token)
    assert outcome(order) == (PENDING, ""), order
    return order


def place_pending_order(
    api: httpx.Client, user: User, product_id: str, quantity: int, payment_token: str = "tok_ok"
) -> dict:
    """An order answered PENDING, then waited for until terminal."""
    order = submit_pending_order(api, user, product_id, quantity, payment_token)
    return wait_terminal(api, user, order["id"])
