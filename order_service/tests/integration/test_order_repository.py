"""The SQL repository on SQLite and PostgreSQL: whole orders in, whole orders out."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from order_service.domain.customers import Customer
from order_service.domain.model import (
    Order,
    OrderLine,
    OrderStatus,
    Payment,
    PaymentStatus,
    SagaMode,
)
from order_service.domain.saga import Saga, SagaStep
from order_service.domain.summary import OrderSummary
from order_service.service_layer.unit_of_work import SqlUnitOfWork
from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from tienda_platform.ids import new_id

pytestmark = pytest.mark.integration

UowFactory = Callable[[], SqlUnitOfWork]
T0 = datetime(2026, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)


def new_order(customer_id: str = "customer-1") -> Order:
    return Order.place(
        order_id=new_id(),
        customer_id=customer_id,
        lines=[
            OrderLine(new_id(), "Zebra mug", 2, 1250),
            OrderLine(new_id(), "Apple tea ☕", 1, 2**40),
        ],
        payment_token="tok_ok",
        now=T0,
    )


async def add(uow_factory: UowFactory, order: Order) -> None:
    async with uow_factory() as uow:
        await uow.orders.add(order)
        await uow.commit()


async def get(uow_factory: UowFactory, order_id: str) -> Order | None:
    async with uow_factory() as uow:
        return await uow.orders.get(order_id)


async def test_an_order_comes_back_as_it_went_in(uow_factory: UowFactory) -> None:
    order = new_order()
    await add(uow_factory, order)
    loaded = await get(uow_factory, order.id)
    assert loaded == order
    assert loaded is not None and loaded.create_time.tzinfo is not None
    assert await get(uow_factory, new_id()) is None


async def test_save_stores_the_status_and_new_payments(uow_factory: UowFactory) -> None:
    order = new_order()
    await add(uow_factory, order)
    charge = Payment(new_id(), order.id, PaymentStatus.APPROVED, order.total_cents, "ch_1", T0)
    refund = Payment(
        new_id(), order.id, PaymentStatus.REFUNDED, order.total_cents, "re_1", T0 + timedelta(1)
    )

    async with uow_factory() as uow:
        loaded = await uow.orders.get(order.id, for_update=True)
        assert loaded is not None
        loaded.record_payment(charge)
        loaded.confirm(now=T0 + timedelta(seconds=1))
        await uow.orders.save(loaded)
        await uow.commit()
    async with uow_factory() as uow:
        loaded = await uow.orders.get(order.id, for_update=True)
        assert loaded is not None
        loaded.cancel(reason="cancelled by customer", now=T0 + timedelta(seconds=2))
        loaded.record_refund(refund)
        await uow.orders.save(loaded)
        await uow.commit()

    stored = await get(uow_factory, order.id)
    assert stored is not None
    assert (stored.status, stored.status_reason) == (OrderStatus.CANCELLED, "cancelled by customer")
    assert stored.update_time == T0 + timedelta(seconds=2)
    assert stored.payments == [charge, refund]


async def test_without_commit_nothing_is_kept(uow_factory: UowFactory) -> None:
    order = new_order()
    async with uow_factory() as uow:
        await uow.orders.add(order)
    assert await get(uow_factory, order.id) is None


async def test_pending_orders_of_a_customer_with_their_name_and_saga_mode(
    uow_factory: UowFactory,
) -> None:
    pending = new_order("alice")
    ended = new_order("alice")
    ended.reject(reason="insufficient stock for X", now=T0)
    choreographed = Order.place(
        order_id=new_id(),
        customer_id="alice",
        lines=[OrderLine(new_id(), "Mug", 1, 100)],
        payment_token="tok_ok",
        now=T0,
        saga_mode=SagaMode.CHOREOGRAPHY,
    )
    for order in (pending, ended, choreographed, new_order("bob")):
        await add(uow_factory, order)
    async with uow_factory() as uow:
        await uow.customers.save(Customer("alice", "a@x.io", "Alice Liddell", False, T0))
        await uow.commit()

    async with uow_factory() as uow:
        found = await uow.orders.pending_of("alice")
    assert sorted(o.id for o in found) == sorted([pending.id, choreographed.id])
    assert {(o.customer_name, o.customer_email) for o in found} == {("Alice Liddell", "a@x.io")}
    loaded = await get(uow_factory, choreographed.id)
    assert loaded is not None and loaded.saga_mode is SagaMode.CHOREOGRAPHY


@contextmanager
def statements(engine: AsyncEngine, *, whole: bool = False) -> Iterator[list[str]]:
    """The SQL statements the engine runs inside the block: their verbs, or whole."""
    ran: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        ran.append(" ".join(statement.split()) if whole else statement.split(None, 1)[0].upper())

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield ran
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_saving_what_was_loaded_reads_nothing_again(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    order = new_order()
    await add(uow_factory, order)
    async with uow_factory() as uow:
        await uow.sagas.add(
            Saga.start(order_id=order.id, mode=order.saga_mode, step=SagaStep.RESERVE, now=T0)
        )
        summary = await uow.summaries.get(order.id)
        assert summary is None
        await uow.summaries.save(
            OrderSummary(order.id, order.customer_id, OrderStatus.PENDING, "", 100, T0, T0)
        )
        await uow.commit()

    async with uow_factory() as uow:
        loaded = await uow.orders.get(order.id, for_update=True)
        saga = await uow.sagas.get(order.id, for_update=True)
        summary = await uow.summaries.get(order.id)
        assert loaded is not None and saga is not None and summary is not None
        loaded.record_payment(
            Payment(new_id(), order.id, PaymentStatus.APPROVED, order.total_cents, "ch_1", T0)
        )
        loaded.confirm(now=T0 + timedelta(seconds=1))
        saga.advance(SagaStep.DONE, now=T0 + timedelta(seconds=1))
        summary.move_to(OrderStatus.CONFIRMED, reason="", at=T0 + timedelta(seconds=1))
        with statements(engine) as ran:
            await uow.orders.save(loaded)
            await uow.sagas.save(saga)
            await uow.summaries.save(summary)
            await uow.commit()
    # the rows loaded above are written back: an order, a saga, a summary and a payment
    assert "SELECT" not in ran
    assert sorted(s for s in ran if s in ("INSERT", "UPDATE")) == ["INSERT"] + ["UPDATE"] * 3

    async with uow_factory() as uow:
        stored_saga = await uow.sagas.get(order.id)
        stored_summary = await uow.summaries.get(order.id)
    stored = await get(uow_factory, order.id)
    assert stored is not None and stored.status is OrderStatus.CONFIRMED
    assert len(stored.payments) == 1
    assert stored_saga is not None and stored_saga.step is SagaStep.DONE
    assert stored_summary is not None and stored_summary.status is OrderStatus.CONFIRMED


async def test_a_summary_update_writes_only_what_changed(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    order = new_order()
    await add(uow_factory, order)
    async with uow_factory() as uow:
        await uow.summaries.get(order.id)
        await uow.summaries.save(
            OrderSummary(order.id, order.customer_id, OrderStatus.PENDING, "", 100, T0, T0)
        )
        await uow.commit()

    async with uow_factory() as uow:
        summary = await uow.summaries.get(order.id)
        assert summary is not None
        summary.move_to(OrderStatus.CONFIRMED, reason="", at=T0 + timedelta(seconds=1))
        with statements(engine, whole=True) as ran:
            await uow.summaries.save(summary)
            await uow.commit()
    # create_time comes back from SQLite without its zone; it is the same time, not a change
    (update,) = [s for s in ran if s.startswith("UPDATE")]
    assert update.startswith("UPDATE order_summaries SET status=")
    assert "create_time" not in update and "lines" not in update
    async with uow_factory() as uow:
        stored = await uow.summaries.get(order.id)
    assert stored is not None and stored.create_time == T0
    assert stored.status is OrderStatus.CONFIRMED and stored.update_time == T0 + timedelta(
        seconds=1
    )


async def test_an_order_is_read_whole_in_one_statement(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    order = new_order("alice")  # two lines
    await add(uow_factory, order)
    async with uow_factory() as uow:
        await uow.customers.save(Customer("alice", "a@x.io", "Alice Liddell", False, T0))
        loaded = await uow.orders.get(order.id, for_update=True)
        assert loaded is not None
        loaded.record_payment(
            Payment(new_id(), order.id, PaymentStatus.APPROVED, order.total_cents, "ch_1", T0)
        )
        loaded.cancel(reason="cancelled by customer", now=T0 + timedelta(seconds=1))
        loaded.record_refund(
            Payment(new_id(), order.id, PaymentStatus.REFUNDED, order.total_cents, "re_1", T0)
        )
        await uow.orders.save(loaded)
        await uow.commit()

    async with uow_factory() as uow:
        with statements(engine) as ran:
            again = await uow.orders.get(order.id, for_update=True)
            pending = await uow.orders.pending_of("alice")
    # the order, its customer's name, its two lines and two payments: one SELECT
    assert ran.count("SELECT") == 2
    assert again is not None
    assert again == replace(loaded, customer_name="Alice Liddell", customer_email="a@x.io")
    assert len(again.lines) == 2 and len(again.payments) == 2
    assert pending == []


async def test_an_order_and_its_saga_are_read_and_locked_in_one_statement(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    order = new_order()
    await add(uow_factory, order)
    async with uow_factory() as uow:
        assert await uow.order_with_saga(order.id) is None  # no saga yet
        await uow.sagas.add(
            Saga.start(order_id=order.id, mode=order.saga_mode, step=SagaStep.RESERVE, now=T0)
        )
        await uow.commit()

    async with uow_factory() as uow:
        with statements(engine) as ran:
            found = await uow.order_with_saga(order.id, for_update=True)
        assert ran.count("SELECT") == 1
        assert found is not None
        loaded, saga = found
        assert loaded == order and saga.step is SagaStep.RESERVE
        if engine.dialect.name == "postgresql":
            # both rows are locked: another transaction cannot lock the saga meanwhile
            async with engine.connect() as other:
                await other.execute(sa.text("SET lock_timeout = '200ms'"))
                with pytest.raises(DBAPIError, match="lock"):
                    await other.execute(
                        sa.text("SELECT 1 FROM order_sagas WHERE order_id = :id FOR UPDATE"),
                        {"id": order.id},
                    )
        saga.advance(SagaStep.PAY, now=T0 + timedelta(seconds=1))
        with statements(engine) as ran:
            await uow.sagas.save(saga)
            await uow.commit()
        assert "SELECT" not in ran  # the saga's row, read with the order, is written back
    async with uow_factory() as uow:
        stored = await uow.sagas.get(order.id)
    assert stored is not None and stored.step is SagaStep.PAY


async def test_an_order_asked_for_in_another_saga_mode_is_not_found(
    uow_factory: UowFactory,
) -> None:
    orchestrated = new_order()
    await add(uow_factory, orchestrated)
    async with uow_factory() as uow:
        assert await uow.orders.get(orchestrated.id, in_mode=SagaMode.CHOREOGRAPHY) is None
        found = await uow.orders.get(
            orchestrated.id, for_update=True, in_mode=SagaMode.ORCHESTRATION
        )
    assert found == orchestrated


async def test_a_sagas_progress_is_one_update_and_reads_back_in_its_transaction(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    """Saving a stored saga writes its progress at once, in one UPDATE, and leaves nothing for
    the commit to flush; read again in the same transaction, it is the saga as saved."""
    order = new_order()
    await add(uow_factory, order)
    async with uow_factory() as uow:
        await uow.sagas.add(
            Saga.start(order_id=order.id, mode=order.saga_mode, step=SagaStep.RESERVE, now=T0)
        )
        await uow.commit()

    later = T0 + timedelta(seconds=1)
    async with uow_factory() as uow:
        found = await uow.order_with_saga(order.id, for_update=True)
        assert found is not None
        saga = found[1]
        saga.claim(worker="w1", until=later + timedelta(seconds=15), now=later)
        saga.advance(SagaStep.PAY, now=later)
        with statements(engine, whole=True) as saved:
            await uow.sagas.save(saga)
        (update,) = saved
        assert update.startswith("UPDATE order_sagas SET step=")
        again = await uow.order_with_saga(order.id, for_update=True)
        assert again is not None and again[1] == saga  # not the row as it was loaded
        with statements(engine) as committed:
            await uow.commit()
        assert committed == []  # nothing left to flush
    async with uow_factory() as uow:
        stored = await uow.sagas.get(order.id)
    assert stored == saga


async def test_a_saga_added_and_saved_in_one_transaction_is_stored_as_last_saved(
    uow_factory: UowFactory,
) -> None:
    order = new_order()
    await add(uow_factory, order)
    later = T0 + timedelta(seconds=1)
    async with uow_factory() as uow:
        saga = Saga.start(order_id=order.id, mode=order.saga_mode, step=SagaStep.RESERVE, now=T0)
        await uow.sagas.add(saga)
        saga.advance(SagaStep.GIVE_BACK, now=later)
        await uow.sagas.save(saga)
        await uow.commit()
    async with uow_factory() as uow:
        stored = await uow.sagas.get(order.id)
    assert stored is not None and stored.step is SagaStep.GIVE_BACK and stored.update_time == later


async def test_a_saved_order_reads_back_as_saved_in_its_transaction(
    uow_factory: UowFactory, engine: AsyncEngine
) -> None:
    """Saving writes the order's status and its new payments at once (nothing is left for
    the commit to flush), and the order read again in the same transaction is the one saved,
    not the row as it was loaded."""
    order = new_order()
    await add(uow_factory, order)
    async with uow_factory() as uow:
        loaded = await uow.orders.get(order.id, for_update=True)
        assert loaded is not None
        loaded.record_payment(
            Payment(new_id(), order.id, PaymentStatus.APPROVED, order.total_cents, "ch_1", T0)
        )
        loaded.confirm(now=T0 + timedelta(seconds=1))
        with statements(engine) as saved:
            await uow.orders.save(loaded)
        assert saved == ["INSERT", "UPDATE"]
        again = await uow.orders.get(order.id, for_update=True)
        assert again == loaded
        with statements(engine) as committed:
            await uow.orders.save(loaded)  # nothing new: the status again, no payment twice
            await uow.commit()
        assert committed == ["UPDATE"]
    assert await get(uow_factory, order.id) == loaded
