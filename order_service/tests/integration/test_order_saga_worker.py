"""The saga worker on a real database: a saga left mid-way by a crashed worker is finished
exactly once by another, a worker whose claim ran out cannot double anything, and every state
change commits together with its event, or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from order_service.adapters.orm import PaymentChargeRow
from order_service.adapters.payments import SimulatedPaymentProvider
from order_service.adapters.saga_repository import SqlSagaRepository
from order_service.domain.commands import CreateOrder, RequestedItem
from order_service.domain.model import Order, OrderStatus, PaymentStatus, SagaMode
from order_service.domain.saga import RetryPolicy, Saga, SagaStep
from order_service.service_layer import choreography, services
from order_service.service_layer.order_saga import SagaRunner, give_back
from order_service.service_layer.ports import ChargeResult, PaymentProvider, SagaRunsHere
from order_service.service_layer.saga_worker import SagaWorker
from order_service.service_layer.unit_of_work import SessionUnitOfWork, SqlUnitOfWork
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from tienda_platform.aio import cancel_and_wait
from tienda_platform.database import session_factory
from tienda_platform.ids import new_id
from tienda_platform.outbox import OutboxEvent

from ..unit.fakes import FakePaymentProvider, FakeProductCatalog, customer, wait_until

pytestmark = pytest.mark.integration

UowFactory = Callable[[], SqlUnitOfWork]
MUG = new_id()


@pytest.fixture
def catalog() -> FakeProductCatalog:
    catalog = FakeProductCatalog()
    catalog.add(MUG, name="Mug", price_cents=1250, stock=10)
    return catalog


def worker(
    name: str,
    uow_factory: UowFactory,
    catalog: FakeProductCatalog,
    payments: PaymentProvider,
    *,
    lease: float = 30.0,
) -> SagaWorker:
    runner = SagaRunner(
        uow_factory=uow_factory,
        catalog=catalog,
        payments=payments,
        payment_timeout=5.0,
        worker=name,
        lease=timedelta(seconds=lease),
        retry=RetryPolicy(base_seconds=0.01),
    )
    return SagaWorker(uow_factory=uow_factory, runner=runner)


async def place(
    uow_factory: UowFactory,
    catalog: FakeProductCatalog,
    saga_runs_here: SagaRunsHere | None = None,
) -> Order:
    return await services.create_order(
        command=CreateOrder(items=(RequestedItem(MUG, 2),), payment_token="tok_ok"),
        principal=customer(),
        uow=uow_factory(),
        catalog=catalog,
        saga_mode=SagaMode.ORCHESTRATION,
        saga_runs_here=saga_runs_here,
    )


async def test_a_choreographed_payment_runs_at_once_here_after_the_reservation_commits(
    uow_factory: UowFactory, engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    here = worker("here", uow_factory, catalog, FakePaymentProvider())
    adopted: list[str] = []

    class Watched:
        """This process's worker, watched."""

        def lease(self, now: datetime) -> tuple[str, datetime]:
            return here.lease(now)

        def adopt(self, saga: Saga, order: Order) -> None:
            adopted.append(saga.order_id)
            here.adopt(saga, order)

    order = await services.create_order(
        command=CreateOrder(items=(RequestedItem(MUG, 1),), payment_token="tok_ok"),
        principal=customer(),
        uow=uow_factory(),
        catalog=catalog,
        saga_mode=SagaMode.CHOREOGRAPHY,
    )
    # as the consumer of stock.reserved runs it: inside the consumer's own transaction
    async with session_factory(engine)() as session, session.begin():
        await choreography.stock_reserved(
            uow=SessionUnitOfWork(session), order_id=order.id, saga_runs_here=Watched()
        )
        assert adopted == []  # nothing runs before the saga is stored
    assert adopted == [order.id]

    # no claim from the saga log: this worker's loop is not even running
    await runs_to_confirmed(uow_factory, engine, order.id)


async def test_a_commit_wakes_the_relay_for_its_events_and_the_worker_for_a_saga_it_holds_not(
    engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    woken = {"relay": 0, "sagas": 0}
    sessions = session_factory(engine)

    def waking() -> SqlUnitOfWork:
        return SqlUnitOfWork(
            sessions,
            on_events=lambda: woken.__setitem__("relay", woken["relay"] + 1),
            on_saga_due=lambda: woken.__setitem__("sagas", woken["sagas"] + 1),
        )

    # placed where no worker runs: its saga is due for any worker, and order.created waits
    await place(waking, catalog)
    assert woken == {"relay": 1, "sagas": 1}

    # placed here: this process's worker holds the saga and runs it at once, storing each
    # step with its claim; only the events of those steps wake anyone
    here = worker("here", waking, catalog, FakePaymentProvider())
    order = await place(waking, catalog, saga_runs_here=here)

    await runs_to_confirmed(waking, engine, order.id)
    assert woken == {"relay": 4, "sagas": 1}

    # a read wakes nobody
    async with waking() as uow:
        await uow.orders.get(order.id)
        await uow.commit()
    assert woken == {"relay": 4, "sagas": 1}

    # a saga given back (its order cancelled) while no worker holds it is due for any
    async with waking() as uow:
        stored = await uow.orders.get(order.id, for_update=True)
        assert stored is not None
        await give_back(uow, stored)
        await uow.commit()
    assert woken == {"relay": 4, "sagas": 2}


async def load(uow_factory: UowFactory, order_id: str) -> tuple[Order, Saga]:
    async with uow_factory() as uow:
        order = await uow.orders.get(order_id)
        saga = await uow.sagas.get(order_id)
    assert order is not None and saga is not None
    return order, saga


async def runs_to_confirmed(uow_factory: UowFactory, engine: AsyncEngine, order_id: str) -> None:
    """Wait until the order is CONFIRMED and its saga done; check what it announced."""

    async def confirmed() -> bool:
        stored, saga = await load(uow_factory, order_id)
        return stored.status is OrderStatus.CONFIRMED and saga.is_done

    await wait_until(confirmed, within=15)
    assert await events_of(engine, order_id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]


async def events_of(engine: AsyncEngine, order_id: str) -> list[str]:
    async with session_factory(engine)() as session:
        rows = await session.exec(
            select(OutboxEvent)
            .where(OutboxEvent.subject == f"orders/{order_id}")
            .order_by(col(OutboxEvent.create_time), col(OutboxEvent.id))
        )
        return [row.event_type for row in rows.all()]


async def charges(engine: AsyncEngine) -> list[PaymentChargeRow]:
    async with session_factory(engine)() as session:
        return list((await session.exec(select(PaymentChargeRow))).all())


async def crash(task: asyncio.Task[None]) -> None:
    """Kill a worker the hard way: no graceful hand-back of its claims."""
    await cancel_and_wait([task])
    assert task.cancelled()


async def confirmed_by(runner: SagaWorker, uow_factory: UowFactory, order_id: str) -> None:
    async def done() -> bool:
        await runner.drain()
        order, _ = await load(uow_factory, order_id)
        return order.status is OrderStatus.CONFIRMED

    await wait_until(done, within=15)


async def test_a_restarted_worker_finishes_a_saga_left_reserved_but_unpaid_exactly_once(
    uow_factory: UowFactory, engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    order = await place(uow_factory, catalog)
    silent = FakePaymentProvider(hold=True)  # no answer before the crash
    first = worker("replica-a", uow_factory, catalog, silent, lease=2.0)
    running = asyncio.create_task(first.drain())
    await silent.charge_started.wait()
    await crash(running)

    _, saga = await load(uow_factory, order.id)
    assert (saga.step, saga.claimed_by) == (SagaStep.PAY, "replica-a")
    assert catalog.stock(MUG) == 8

    restarted = worker(
        "replica-b", uow_factory, catalog, SimulatedPaymentProvider(session_factory(engine))
    )
    await restarted.drain()  # the dead worker's claim still holds
    assert (await load(uow_factory, order.id))[0].status is OrderStatus.PENDING
    await confirmed_by(restarted, uow_factory, order.id)

    final, saga = await load(uow_factory, order.id)
    assert saga.step is SagaStep.DONE
    assert (catalog.calls_of("reserve_stock"), catalog.calls_of("commit_reservation")) == (1, 1)
    assert catalog.stock(MUG) == 8
    assert [p.status for p in final.payments] == [PaymentStatus.APPROVED]
    assert len(await charges(engine)) == 1
    assert await events_of(engine, order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]


class AnswersThenCrashes(PaymentProvider):
    """The provider answers, then the worker dies before storing the answer."""

    def __init__(self, real: PaymentProvider) -> None:
        self.real = real
        self.answered = asyncio.Event()
        self.answer: ChargeResult | None = None

    async def charge(
        self, *, token: str, amount_cents: int, idempotency_key: str, answer_within: float
    ) -> ChargeResult:
        self.answer = await self.real.charge(
            token=token,
            amount_cents=amount_cents,
            idempotency_key=idempotency_key,
            answer_within=answer_within,
        )
        self.answered.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def refund(
        self, *, charge_reference: str, amount_cents: int, idempotency_key: str
    ) -> str:
        raise AssertionError("no refund expected")


async def test_a_charge_made_before_a_crash_is_not_made_twice(
    uow_factory: UowFactory, engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    order = await place(uow_factory, catalog)
    provider = SimulatedPaymentProvider(session_factory(engine))
    dying = AnswersThenCrashes(provider)
    running = asyncio.create_task(
        worker("replica-a", uow_factory, catalog, dying, lease=0.3).drain()
    )
    await dying.answered.wait()
    await crash(running)

    restarted = worker("replica-b", uow_factory, catalog, provider)
    await confirmed_by(restarted, uow_factory, order.id)

    final, _ = await load(uow_factory, order.id)
    assert dying.answer is not None
    assert [p.provider_reference for p in final.payments] == [dying.answer.provider_reference]
    assert len(await charges(engine)) == 1


async def test_a_worker_whose_claim_ran_out_stores_nothing(
    uow_factory: UowFactory, engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    order = await place(uow_factory, catalog)
    slow = FakePaymentProvider(hold=True)
    stale_worker = worker("stale", uow_factory, catalog, slow, lease=0.3)
    stale = asyncio.create_task(stale_worker.drain())
    await slow.charge_started.wait()

    # the lease runs out while the stale worker waits for its provider; another takes over
    await confirmed_by(
        worker("fresh", uow_factory, catalog, FakePaymentProvider()), uow_factory, order.id
    )
    slow.gate.set()  # the stale worker's answer arrives after all
    await asyncio.wait_for(stale, 5)

    final, _ = await load(uow_factory, order.id)
    assert [p.status for p in final.payments] == [PaymentStatus.APPROVED]
    assert await events_of(engine, order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]


async def test_an_order_its_event_and_its_saga_commit_together_or_not_at_all(
    uow_factory: UowFactory,
    engine: AsyncEngine,
    catalog: FakeProductCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def broken_add(self: SqlSagaRepository, saga: Saga) -> None:
        raise RuntimeError("disk full")

    with monkeypatch.context() as patch:
        patch.setattr(SqlSagaRepository, "add", broken_add)
        with pytest.raises(RuntimeError, match="disk full"):
            await place(uow_factory, catalog)
    async with session_factory(engine)() as session:
        assert (await session.exec(select(OutboxEvent))).all() == []

    order = await place(uow_factory, catalog)
    assert await events_of(engine, order.id) == ["order.created"]


async def test_a_status_change_that_fails_to_commit_leaves_no_event_and_is_retried_once(
    uow_factory: UowFactory,
    engine: AsyncEngine,
    catalog: FakeProductCatalog,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    order = await place(uow_factory, catalog)
    real_save = SqlSagaRepository.save
    failures = 0

    async def failing_when_done(self: SqlSagaRepository, saga: Saga) -> None:
        nonlocal failures
        if saga.step is SagaStep.DONE and failures < 2:
            failures += 1
            raise RuntimeError("connection lost")
        await real_save(self, saga)

    monkeypatch.setattr(SqlSagaRepository, "save", failing_when_done)
    runner = worker("w", uow_factory, catalog, FakePaymentProvider(), lease=0.2)
    await runner.drain()
    pending, saga = await load(uow_factory, order.id)
    assert pending.status is OrderStatus.PENDING
    assert saga.step is SagaStep.COMMIT
    assert await events_of(engine, order.id) == ["order.created", "payment.approved"]

    await confirmed_by(runner, uow_factory, order.id)
    assert failures == 2
    assert await events_of(engine, order.id) == [
        "order.created",
        "payment.approved",
        "order.confirmed",
    ]
    assert catalog.reservations[order.id].state == "committed"


async def test_the_saga_of_an_order_placed_here_runs_at_once_claimed_by_this_worker(
    uow_factory: UowFactory, engine: AsyncEngine, catalog: FakeProductCatalog
) -> None:
    slow = FakePaymentProvider(hold=True)
    here = worker("here", uow_factory, catalog, slow)
    elsewhere = worker("elsewhere", uow_factory, catalog, FakePaymentProvider())
    order = await place(uow_factory, catalog, saga_runs_here=here)
    # stored claimed by this process's worker, whose loop is not even running: the saga runs
    # without a claim from the log (it reserves, then waits for the provider)
    _, saga = await load(uow_factory, order.id)
    assert saga.claimed_by == "here"
    await asyncio.wait_for(slow.charge_started.wait(), 5)
    # meanwhile no other worker may take it up
    assert await elsewhere.claim(limit=10) == []

    slow.gate.set()
    await runs_to_confirmed(uow_factory, engine, order.id)


async def test_the_saga_of_an_order_placed_by_a_process_that_died_is_taken_up_from_the_log(
    uow_factory: UowFactory, catalog: FakeProductCatalog
) -> None:
    class Died:
        """A worker that claims the saga, then dies before running it."""

        def lease(self, now: datetime) -> tuple[str, datetime]:
            return "died", now + timedelta(seconds=0.2)

        def adopt(self, saga: Saga, order: Order) -> None:
            pass

    order = await place(uow_factory, catalog, saga_runs_here=Died())
    # once the claim has run out, any worker finishes it
    await confirmed_by(
        worker("fresh", uow_factory, catalog, FakePaymentProvider()), uow_factory, order.id
    )
