"""Every change of an order that others may care about, with the event that announces it.

Each function changes the order, saves it, and records its event in the caller's unit of work,
so the state change and its event commit together. Orders leaving PENDING are counted in
tienda_saga_outcomes_total once their transaction commits.
"""

from __future__ import annotations

from datetime import UTC, datetime

from events.v1 import events_pb2
from prometheus_client import Counter

from order_service.domain.model import (
    CUSTOMER_DELETED,
    PAYMENT_DECLINED,
    PAYMENT_TIMED_OUT,
    Order,
    OrderStatus,
    Payment,
    PaymentStatus,
)
from order_service.service_layer.unit_of_work import AbstractUnitOfWork

SAGA_OUTCOMES = Counter(
    "tienda_saga_outcomes_total",
    "Orders by how their saga ended: mode, final status, and a bounded reason.",
    ["mode", "status", "reason"],
)

_STATUS_EVENTS = {
    OrderStatus.CONFIRMED: "order.confirmed",
    OrderStatus.CANCELLED: "order.cancelled",
    OrderStatus.REJECTED: "order.rejected",
}


def utc_now() -> datetime:
    return datetime.now(UTC)


def subject_of(order_id: str) -> str:
    return f"orders/{order_id}"


def outcome_reason(status: OrderStatus, reason: str) -> str:
    """A label from a small fixed set: free-form reasons would explode the metric."""
    if status is OrderStatus.CONFIRMED:
        return "none"
    if reason == PAYMENT_DECLINED:
        return "declined"
    if reason == PAYMENT_TIMED_OUT:
        return "timed_out"
    if reason == CUSTOMER_DELETED:
        return "customer_deleted"
    if reason.startswith("insufficient stock"):
        return "insufficient_stock"
    if reason.startswith("cancelled by"):
        return "cancelled"
    if reason.startswith("stock could not be committed"):
        return "commit_failed"
    return "other"


async def place(uow: AbstractUnitOfWork, order: Order) -> None:
    """Store a new PENDING order and announce it (order.created)."""
    # the order's times are its events' times, so the read model shows the very same ones
    order.create_time = order.update_time = uow.record_event(
        event_type="order.created",
        subject=subject_of(order.id),
        payload=events_pb2.OrderCreated(
            order_id=order.id,
            customer_id=order.customer_id,
            lines=[
                events_pb2.OrderLine(
                    product_id=line.product_id,
                    quantity=line.quantity,
                    unit_price_cents=line.unit_price_cents,
                    product_name=line.product_name,
                )
                for line in order.lines
            ],
            total_cents=order.total_cents,
            saga_mode=order.saga_mode.value,
        ),
    )
    await uow.orders.add(order)


async def confirm(uow: AbstractUnitOfWork, order: Order) -> None:
    order.confirm(now=utc_now())
    await _announce(uow, order, was_pending=True)


async def reject(uow: AbstractUnitOfWork, order: Order, *, reason: str) -> None:
    order.reject(reason=reason, now=utc_now())
    await _announce(uow, order, was_pending=True)


async def cancel(
    uow: AbstractUnitOfWork, order: Order, *, reason: str, refund: Payment | None = None
) -> None:
    was_pending = order.is_pending
    order.cancel(reason=reason, now=utc_now())
    if refund is not None:
        order.record_refund(refund)
    await _announce(uow, order, was_pending=was_pending)


async def record_charge(
    uow: AbstractUnitOfWork, order: Order, payment: Payment, *, announce: bool = True
) -> None:
    """Add a charge's outcome to the order's ledger; announce it unless the order has moved on
    (a charge that lands after a cancellation is only refunded)."""
    order.record_payment(payment)
    await uow.orders.save(order)
    if not announce:
        return
    if payment.status is PaymentStatus.APPROVED:
        uow.record_event(
            event_type="payment.approved",
            subject=subject_of(order.id),
            payload=events_pb2.PaymentApproved(
                order_id=order.id, payment_id=payment.id, amount_cents=payment.amount_cents
            ),
        )
    else:
        uow.record_event(
            event_type="payment.declined",
            subject=subject_of(order.id),
            payload=events_pb2.PaymentDeclined(
                order_id=order.id, reason=order.payment_failure or PAYMENT_DECLINED
            ),
        )


async def _announce(uow: AbstractUnitOfWork, order: Order, *, was_pending: bool) -> None:
    order.update_time = uow.record_event(
        event_type=_STATUS_EVENTS[order.status],
        subject=subject_of(order.id),
        payload=events_pb2.OrderStatusChanged(
            order_id=order.id,
            customer_id=order.customer_id,
            status=f"ORDER_STATUS_{order.status.value}",
            reason=order.status_reason,
            total_cents=order.total_cents,
            saga_mode=order.saga_mode.value,
        ),
    )
    await uow.orders.save(order)
    if was_pending:
        labels = (
            order.saga_mode.value,
            order.status.value.lower(),
            outcome_reason(order.status, order.status_reason),
        )
        uow.after_commit(lambda: SAGA_OUTCOMES.labels(*labels).inc())
