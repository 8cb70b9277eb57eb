"""The Order aggregate: totals, the status machine, the payment ledger and input validation."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import grpc
import pytest
from order_service.domain.commands import RequestedItem
from order_service.domain.errors import IllegalTransition
from order_service.domain.model import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    validate_new_order,
    validate_order_id,
)
from tienda_platform.errors import InvalidArgument
from tienda_platform.ids import new_id
from tienda_platform.testing import fixed_id

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = datetime(2026, 1, 2, 3, 5, 0, tzinfo=UTC)


def new_order() -> Order:
    return Order.place(
        order_id=new_id(),
        customer_id="customer-1",
        lines=[
            OrderLine(product_id=new_id(), product_name="Mug", quantity=3, unit_price_cents=250),
            OrderLine(product_id=new_id(), product_name="Tea", quantity=1, unit_price_cents=999),
        ],
        payment_token="tok_secret",
        now=NOW,
    )


def payment(order: Order, status: PaymentStatus) -> Payment:
    return Payment(new_id(), order.id, status, order.total_cents, f"ref-{status}", NOW)


def test_a_placed_order_is_pending_with_its_total_from_the_snapshots() -> None:
    order = new_order()
    assert order.status is OrderStatus.PENDING
    assert order.status_reason == ""
    assert order.total_cents == 3 * 250 + 999
    assert order.create_time == order.update_time == NOW


def test_a_total_beyond_a_bigint_is_refused() -> None:
    line = OrderLine(product_id=new_id(), product_name="Yacht", quantity=2, unit_price_cents=2**62)
    with pytest.raises(InvalidArgument, match="order total is too large"):
        Order.place(order_id=new_id(), customer_id="c", lines=[line], payment_token="t", now=NOW)


@pytest.mark.parametrize(
    ("steps", "status", "reason"),
    [
        ([lambda o: o.confirm(now=LATER)], OrderStatus.CONFIRMED, ""),
        (
            [lambda o: o.reject(reason="out of stock", now=LATER)],
            OrderStatus.REJECTED,
            "out of stock",
        ),
        (
            [lambda o: o.cancel(reason="payment declined", now=LATER)],
            OrderStatus.CANCELLED,
            "payment declined",
        ),
        (
            [lambda o: o.confirm(now=NOW), lambda o: o.cancel(reason="by owner", now=LATER)],
            OrderStatus.CANCELLED,
            "by owner",
        ),
    ],
)
def test_allowed_transitions(
    steps: list[Callable[[Order], None]], status: OrderStatus, reason: str
) -> None:
    order = new_order()
    for step in steps:
        step(order)
    assert (order.status, order.status_reason, order.update_time) == (status, reason, LATER)


@pytest.mark.parametrize(
    ("setup", "attempt", "message"),
    [
        (
            lambda o: o.confirm(now=NOW),
            lambda o: o.confirm(now=LATER),
            "order is already confirmed",
        ),
        (
            lambda o: o.confirm(now=NOW),
            lambda o: o.reject(reason="x", now=LATER),
            "order is already confirmed",
        ),
        (
            lambda o: o.reject(reason="x", now=NOW),
            lambda o: o.cancel(reason="y", now=LATER),
            "order is already rejected",
        ),
        (
            lambda o: o.reject(reason="x", now=NOW),
            lambda o: o.confirm(now=LATER),
            "order is already rejected",
        ),
        (
            lambda o: o.cancel(reason="x", now=NOW),
            lambda o: o.cancel(reason="y", now=LATER),
            "order is already cancelled",
        ),
        (
            lambda o: o.cancel(reason="x", now=NOW),
            lambda o: o.confirm(now=LATER),
            "order is already cancelled",
        ),
    ],
)
def test_illegal_transitions_are_failed_preconditions_and_change_nothing(
    setup: Callable[[Order], None], attempt: Callable[[Order], None], message: str
) -> None:
    order = new_order()
    setup(order)
    before = (order.status, order.status_reason, order.update_time)
    with pytest.raises(IllegalTransition, match=message) as raised:
        attempt(order)
    assert raised.value.code is grpc.StatusCode.FAILED_PRECONDITION
    assert (order.status, order.status_reason, order.update_time) == before


def test_the_ledger_refunds_the_approved_charge_once() -> None:
    order = new_order()
    order.record_payment(payment(order, PaymentStatus.DECLINED))
    assert order.refundable_payment is None
    approved = payment(order, PaymentStatus.APPROVED)
    order.record_payment(approved)
    assert order.refundable_payment == approved
    order.record_refund(payment(order, PaymentStatus.REFUNDED))
    order.record_refund(payment(order, PaymentStatus.REFUNDED))
    assert order.refundable_payment is None
    assert [p.status for p in order.payments].count(PaymentStatus.REFUNDED) == 1


def test_owners_and_admins_see_an_order_and_others_do_not() -> None:
    order = new_order()
    assert order.is_visible_to(user_id="customer-1", is_admin=False)
    assert order.is_visible_to(user_id="someone", is_admin=True)
    assert not order.is_visible_to(user_id="customer-2", is_admin=False)


def test_the_payment_token_stays_out_of_the_repr() -> None:
    assert "tok_secret" not in repr(new_order())


def violations(items: list[RequestedItem], token: str = "tok_ok") -> dict[str, str]:
    with pytest.raises(InvalidArgument) as raised:
        validate_new_order(items=items, payment_token=token)
    return {v.field: v.description for v in raised.value.violations}


def test_a_valid_request_passes() -> None:
    items = [RequestedItem(new_id(), 1), RequestedItem(new_id(), 1000)]
    validate_new_order(items=items, payment_token="x" * 128)


@pytest.mark.parametrize(
    ("items", "token", "fields"),
    [
        ([], "tok_ok", {"items"}),
        ([RequestedItem(new_id(), 1) for _ in range(51)], "tok_ok", {"items"}),
        ([RequestedItem(new_id(), 0)], "tok_ok", {"items[0].quantity"}),
        (
            [RequestedItem(new_id(), 1), RequestedItem(new_id(), -5)],
            "tok_ok",
            {"items[1].quantity"},
        ),
        ([RequestedItem(new_id(), 1001)], "tok_ok", {"items[0].quantity"}),
        ([RequestedItem("not-a-uuid", 1)], "tok_ok", {"items[0].product_id"}),
        ([RequestedItem(new_id().upper(), 1)], "tok_ok", {"items[0].product_id"}),
        ([RequestedItem("x" * 1_000_000, 1)], "tok_ok", {"items[0].product_id"}),
        ([RequestedItem(new_id(), 1)], "", {"payment_token"}),
        ([RequestedItem(new_id(), 1)], "t" * 129, {"payment_token"}),
        ([RequestedItem(new_id(), 1)], "t" * 1_000_000, {"payment_token"}),
        ([RequestedItem("", 0)], "", {"items[0].product_id", "items[0].quantity", "payment_token"}),
    ],
)
def test_each_problem_is_a_field_violation(
    items: list[RequestedItem], token: str, fields: set[str]
) -> None:
    assert set(violations(items, token)) == fields


def test_a_product_listed_twice_is_a_violation_on_the_second_line() -> None:
    product_id = new_id()
    found = violations([RequestedItem(product_id, 1), RequestedItem(product_id, 2)])
    assert found == {"items[1].product_id": "duplicate product; list each product once"}


def test_a_huge_item_list_gives_one_violation_not_one_per_item() -> None:
    found = violations([RequestedItem("bad", 0) for _ in range(10_000)])
    assert found == {"items": "must have 1 to 50 items"}


@pytest.mark.parametrize("bad", ["", "123", "x" * 1_000_000, fixed_id(1).upper()])
def test_order_ids_must_be_uuids(bad: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_order_id(bad)
    assert [v.field for v in raised.value.violations] == ["id"]


def test_a_uuid_order_id_passes() -> None:
    validate_order_id(new_id())
