"""The Order aggregate: its lines, its payments, its status machine, and input validation."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from tienda_platform.errors import InvalidArgument, Validator
from tienda_platform.ids import is_valid_id

from order_service.domain.commands import RequestedItem
from order_service.domain.errors import IllegalTransition

MAX_ITEMS = 50
MAX_QUANTITY = 1000
MAX_PAYMENT_TOKEN_CHARS = 128
# Totals are stored as a signed 64-bit integer (bigint).
MAX_TOTAL_CENTS = 2**63 - 1
_UUID_CHARS = 36


class SagaMode(StrEnum):
    """How an order's saga is coordinated (ORDER_SAGA_MODE when it was placed)."""

    ORCHESTRATION = "orchestration"
    CHOREOGRAPHY = "choreography"


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


_NEXT: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING: frozenset(
        {OrderStatus.CONFIRMED, OrderStatus.REJECTED, OrderStatus.CANCELLED}
    ),
    OrderStatus.CONFIRMED: frozenset({OrderStatus.CANCELLED}),
    OrderStatus.REJECTED: frozenset(),
    OrderStatus.CANCELLED: frozenset(),
}


class PaymentStatus(StrEnum):
    APPROVED = "APPROVED"
    DECLINED = "DECLINED"
    TIMED_OUT = "TIMED_OUT"
    REFUNDED = "REFUNDED"


PAYMENT_DECLINED = "payment declined"
PAYMENT_TIMED_OUT = "payment timed out"
CUSTOMER_DELETED = "customer deleted"


@dataclass(frozen=True)
class OrderLine:
    """One product of an order, with its name and price as they were when it was placed."""

    product_id: str
    product_name: str
    quantity: int
    unit_price_cents: int

    @property
    def subtotal_cents(self) -> int:
        return self.quantity * self.unit_price_cents


@dataclass(frozen=True)
class Payment:
    """One entry of an order's payment ledger: a charge attempt or a refund."""

    id: str
    order_id: str
    status: PaymentStatus
    amount_cents: int
    provider_reference: str
    create_time: datetime


@dataclass
class Order:
    """An order; every status change goes through its methods."""

    id: str
    customer_id: str
    status: OrderStatus
    status_reason: str
    lines: list[OrderLine]
    total_cents: int
    # The provider's token, kept to resume a saga later; repr=False keeps it out of logs.
    payment_token: str = field(repr=False)
    create_time: datetime
    update_time: datetime
    saga_mode: SagaMode = SagaMode.ORCHESTRATION
    payments: list[Payment] = field(default_factory=list)
    # The customer's name as replicated from auth events: shown with the order, never changed
    # through it (the customer snapshot owns it); the same for the email.
    customer_name: str = ""
    customer_email: str = ""

    @classmethod
    def place(
        cls,
        *,
        order_id: str,
        customer_id: str,
        lines: Sequence[OrderLine],
        payment_token: str,
        now: datetime,
        saga_mode: SagaMode = SagaMode.ORCHESTRATION,
    ) -> Order:
        """A new PENDING order whose total is computed from its lines' snapshots."""
        total = sum(line.subtotal_cents for line in lines)
        if total > MAX_TOTAL_CENTS:
            raise InvalidArgument.for_field("items", "order total is too large")
        return cls(
            id=order_id,
            customer_id=customer_id,
            status=OrderStatus.PENDING,
            status_reason="",
            lines=list(lines),
            total_cents=total,
            payment_token=payment_token,
            create_time=now,
            update_time=now,
            saga_mode=saga_mode,
        )

    def confirm(self, *, now: datetime) -> None:
        self._move_to(OrderStatus.CONFIRMED, "", now)

    def reject(self, *, reason: str, now: datetime) -> None:
        self._move_to(OrderStatus.REJECTED, reason, now)

    def cancel(self, *, reason: str, now: datetime) -> None:
        self._move_to(OrderStatus.CANCELLED, reason, now)

    def record_payment(self, payment: Payment) -> None:
        self.payments.append(payment)

    def record_refund(self, refund: Payment) -> None:
        """Record the refund of the approved charge, once: the provider dedupes refunds too."""
        if self.refundable_payment is not None:
            self.payments.append(refund)

    @property
    def refundable_payment(self) -> Payment | None:
        """The approved charge that has not been refunded yet, if any."""
        approved = [p for p in self.payments if p.status is PaymentStatus.APPROVED]
        refunded = any(p.status is PaymentStatus.REFUNDED for p in self.payments)
        return approved[-1] if approved and not refunded else None

    @property
    def payment_failure(self) -> str | None:
        """Why the last charge failed ("payment declined" / "payment timed out"), if it did."""
        charges = [p for p in self.payments if p.status is not PaymentStatus.REFUNDED]
        if not charges or charges[-1].status is PaymentStatus.APPROVED:
            return None
        return (
            PAYMENT_TIMED_OUT if charges[-1].status is PaymentStatus.TIMED_OUT else PAYMENT_DECLINED
        )

    @property
    def is_pending(self) -> bool:
        return self.status is OrderStatus.PENDING

    def is_visible_to(self, *, user_id: str, is_admin: bool) -> bool:
        return is_admin or self.customer_id == user_id

    def _move_to(self, status: OrderStatus, reason: str, now: datetime) -> None:
        if status not in _NEXT[self.status]:
            raise IllegalTransition(self.status.value)
        self.status = status
        self.status_reason = reason
        self.update_time = now


def validate_new_order(
    *, items: Sequence[RequestedItem], payment_token: str, request_id: str = ""
) -> None:
    """INVALID_ARGUMENT with one field violation per problem of a new order's request."""
    check = Validator()
    check.check(
        not request_id or _REQUEST_ID.fullmatch(request_id) is not None,
        "request_id",
        "must be 1 to 64 letters, digits or -_.:",
    )
    check.check(1 <= len(items) <= MAX_ITEMS, "items", f"must have 1 to {MAX_ITEMS} items")
    # Per-item checks only for an acceptable number of items: a huge list gets one violation.
    if len(items) <= MAX_ITEMS:
        seen: set[str] = set()
        for index, item in enumerate(items):
            product_id = item.product_id
            valid_id = len(product_id) == _UUID_CHARS and is_valid_id(product_id)
            check.check(valid_id, f"items[{index}].product_id", "must be a UUID")
            check.check(
                not valid_id or product_id not in seen,
                f"items[{index}].product_id",
                "duplicate product; list each product once",
            )
            seen.add(product_id)
            check.check(
                1 <= item.quantity <= MAX_QUANTITY,
                f"items[{index}].quantity",
                f"must be between 1 and {MAX_QUANTITY}",
            )
    check.check(
        1 <= len(payment_token) <= MAX_PAYMENT_TOKEN_CHARS,
        "payment_token",
        f"must be 1 to {MAX_PAYMENT_TOKEN_CHARS} characters",
    )
    check.raise_if_invalid()


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def validate_order_id(order_id: str) -> None:
    """INVALID_ARGUMENT unless order_id is a UUID."""
    if not (len(order_id) == _UUID_CHARS and is_valid_id(order_id)):
        raise InvalidArgument.for_field("id", "must be a UUID")
