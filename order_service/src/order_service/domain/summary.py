"""The order summary: the read model ListOrders serves, built only from events.

Events may arrive late, twice or (after a retry) out of order, so each change is a merge that
never moves an order back: a status only replaces one of lower rank, and order.created fills
in the lines of a summary an earlier status event created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from order_service.domain.model import OrderLine, OrderStatus

_RANK = {
    OrderStatus.PENDING: 0,
    OrderStatus.CONFIRMED: 1,
    OrderStatus.REJECTED: 2,
    OrderStatus.CANCELLED: 2,
}


@dataclass
class OrderSummary:
    """One order as ListOrders shows it, with its product and customer names."""

    order_id: str
    customer_id: str
    status: OrderStatus
    status_reason: str
    total_cents: int
    create_time: datetime
    update_time: datetime
    lines: list[OrderLine] = field(default_factory=list)
    # The customer's name as the read model last heard it; joined in when read.
    customer_name: str = ""

    def fill_in(self, *, lines: list[OrderLine], total_cents: int, create_time: datetime) -> None:
        """What order.created knows, for a summary a status event created first."""
        self.lines = lines
        self.total_cents = total_cents
        self.create_time = create_time

    def move_to(self, status: OrderStatus, *, reason: str, at: datetime) -> bool:
        """Take a status of higher rank; False (nothing changes) for an older or equal one."""
        if _RANK[status] <= _RANK[self.status]:
            return False
        self.status = status
        self.status_reason = reason
        self.update_time = max(self.update_time, at)
        return True
