"""The steps of an order's saga, driven from the saga log (domain/saga.py).

Each step first talks to the outside world (product_service, the payment provider) with no
database transaction open, then stores its outcome, and the next step, in one transaction
that locks the order and its saga. Every call is idempotent (by order id, or by idempotency
key for the provider), so a step repeated after a crash or a lost claim has no second effect.
A step whose transaction finds the saga moved on (the order was cancelled meanwhile) stores
nothing but what must not be lost (a charge that went through) and the runner carries on with
the new step. Transient failures (UNAVAILABLE, DEADLINE_EXCEEDED, or anything unexpected)
are retried with backoff; they delay an order, never fail it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

from loguru import logger
from tienda_platform.errors import FailedPrecondition, InvalidArgument, NotFound
from tienda_platform.ids import new_id
from tienda_platform.telemetry import span_in_trace

from order_service.domain.model import (
    PAYMENT_DECLINED,
    Order,
    Payment,
    PaymentStatus,
    SagaMode,
)
from order_service.domain.saga import RetryPolicy, Saga, SagaStep
from order_service.service_layer import transitions
from order_service.service_layer.ports import (
    PaymentProvider,
    ProductCatalog,
    Reservation,
    StockLine,
)
from order_service.service_layer.transitions import utc_now
from order_service.service_layer.unit_of_work import AbstractUnitOfWork

COMMIT_FAILED = "stock could not be committed"
# product_service answers that no retry can change: the step has an outcome, not a failure.
_DEFINITE = (NotFound, InvalidArgument, FailedPrecondition)

Effect = Callable[[AbstractUnitOfWork, Order, Saga], Awaitable[None]]


def charge_key(order_id: str) -> str:
    return f"{order_id}:charge"


def refund_key(order_id: str) -> str:
    return f"{order_id}:refund"


async def refund_payment(*, order: Order, payments: PaymentProvider) -> Payment | None:
    """Refund the order's approved, unrefunded charge; the refund's ledger entry, or None."""
    charge = order.refundable_payment
    if charge is None:
        return None
    reference = await payments.refund(
        charge_reference=charge.provider_reference,
        amount_cents=charge.amount_cents,
        idempotency_key=refund_key(order.id),
    )
    return Payment(
        id=new_id(),
        order_id=order.id,
        status=PaymentStatus.REFUNDED,
        amount_cents=charge.amount_cents,
        provider_reference=reference,
        create_time=utc_now(),
    )


async def give_back(uow: AbstractUnitOfWork, order: Order) -> None:
    """The order was just cancelled: have its saga return what it took (in uow's transaction).

    A choreographed order without a saga never got as far as a charge, and product_service
    releases its stock on order.cancelled: nothing to do.
    """
    saga = await uow.sagas.get(order.id, for_update=True)
    if saga is not None:
        saga.give_back(now=utc_now())
        await uow.sagas.save(saga)
    elif order.saga_mode is SagaMode.ORCHESTRATION:
        await uow.sagas.add(
            Saga.start(
                order_id=order.id, mode=order.saga_mode, step=SagaStep.GIVE_BACK, now=utc_now()
            )
        )


class SagaRunner:
    """Runs the steps of sagas this worker has claimed."""

    def __init__(
        self,
        *,
        uow_factory: Callable[[], AbstractUnitOfWork],
        catalog: ProductCatalog,
        payments: PaymentProvider,
        payment_timeout: float,
        worker: str,
        lease: timedelta,
        retry: RetryPolicy,
        read_uow_factory: Callable[[], AbstractUnitOfWork] | None = None,
    ) -> None:
        self._uow_factory = uow_factory
        self._read_uow_factory = read_uow_factory or uow_factory
        self._catalog = catalog
        self._payments = payments
        self._payment_timeout = payment_timeout
        self.worker = worker
        self.lease = lease
        self._retry = retry

    async def drive(self, order_id: str, loaded: tuple[Saga, Order] | None = None) -> None:
        """Run the claimed saga's steps until it is done, waits for a retry, or is lost;
        from `loaded` (the saga and order as stored) when the caller has them."""
        loaded = loaded or await self._load(order_id)
        while loaded is not None:
            saga, _order = loaded
            if saga.is_done or saga.claimed_by != self.worker:
                return
            # each step is a span in the trace of the request that started the saga
            with span_in_trace(
                f"saga {saga.step.value.lower()}",
                saga.trace_parent,
                order_id=order_id,
                saga_mode=saga.mode.value,
            ):
                loaded = await self._step(loaded)

    async def _step(self, loaded: tuple[Saga, Order]) -> tuple[Saga, Order] | None:
        """Run one step: what to go on with, or None when this worker is done with the saga."""
        saga, order = loaded
        try:
            effect, on_superseded = await self._execute(saga, order)
        except Exception as error:
            # UNAVAILABLE, DEADLINE_EXCEEDED, no service token, a database hiccup, a bug:
            # none of them may end the order, so all of them wait and retry.
            logger.opt(exception=error).warning(
                "saga step {step} will be retried: {error}",
                step=saga.step.value,
                error=repr(error)[:200],
                order_id=order.id,
            )
            if not await self._retry_later(order.id, saga.step, repr(error)):
                return None
            return await self._load(order.id)
        return await self._store(order.id, saga.step, effect, on_superseded)

    async def _load(self, order_id: str) -> tuple[Saga, Order] | None:
        # a read: _store checks again, under lock, that the saga is still at this step
        async with self._read_uow_factory() as uow:
            found = await uow.order_with_saga(order_id)
        if found is None:
            return None
        order, saga = found
        return saga, order

    async def _execute(self, saga: Saga, order: Order) -> tuple[Effect, Effect | None]:
        """Do the step's outside work; what to store if the saga is still at that step, and
        (optionally) what to store if it has moved on."""
        if saga.step is SagaStep.RESERVE:
            return await self._reserve(order), None
        if saga.step is SagaStep.PAY:
            return await self._pay(order)
        if saga.step is SagaStep.COMMIT:
            return await self._commit(order), None
        if saga.step is SagaStep.RELEASE:
            return await self._release(order), None
        return await self._give_back(saga, order), None

    async def _reserve(self, order: Order) -> Effect:
        lines = [StockLine(line.product_id, line.quantity) for line in order.lines]
        try:
            reservation = await self._catalog.reserve_stock(order_id=order.id, lines=lines)
        except _DEFINITE as error:
            reservation = Reservation(reserved=False, reason=error.message)

        async def effect(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            if reservation.reserved:
                saga.advance(SagaStep.PAY, now=utc_now())
            else:
                await transitions.reject(uow, order, reason=reservation.reason)
                saga.advance(SagaStep.DONE, now=utc_now())

        return effect

    async def _pay(self, order: Order) -> tuple[Effect, Effect]:
        payment = await self._charge(order)

        async def effect(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            await transitions.record_charge(uow, order, payment)
            approved = payment.status is PaymentStatus.APPROVED
            if saga.mode is SagaMode.CHOREOGRAPHY:
                # product_service commits on order.confirmed, or releases on payment.declined
                # and its stock.released then ends the order
                if approved:
                    await transitions.confirm(uow, order)
                saga.advance(SagaStep.DONE, now=utc_now())
            elif approved:
                saga.advance(SagaStep.COMMIT, now=utc_now())
            else:
                reason = order.payment_failure or PAYMENT_DECLINED
                saga.advance(SagaStep.RELEASE, now=utc_now(), reason=reason)

        async def superseded(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            # the order was cancelled while we charged: keep the charge so it gets refunded
            await transitions.record_charge(uow, order, payment, announce=False)

        return effect, superseded

    async def _charge(self, order: Order) -> Payment:
        """Charge the total; no answer within the timeout counts as a failed payment."""
        try:
            result = await self._payments.charge(
                token=order.payment_token,
                amount_cents=order.total_cents,
                idempotency_key=charge_key(order.id),
                answer_within=self._payment_timeout,
            )
        except TimeoutError:
            status, reference = PaymentStatus.TIMED_OUT, ""
        else:
            status = PaymentStatus.APPROVED if result.approved else PaymentStatus.DECLINED
            reference = result.provider_reference
        return Payment(
            id=new_id(),
            order_id=order.id,
            status=status,
            amount_cents=order.total_cents,
            provider_reference=reference,
            create_time=utc_now(),
        )

    async def _commit(self, order: Order) -> Effect:
        try:
            await self._catalog.commit_reservation(order_id=order.id)
            committed = True
        except _DEFINITE as error:
            logger.warning(
                "commit of reservation refused: {error}", error=error.message, order_id=order.id
            )
            committed = False

        async def effect(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            if committed:
                await transitions.confirm(uow, order)
                saga.advance(SagaStep.DONE, now=utc_now())
            else:
                saga.advance(SagaStep.RELEASE, now=utc_now(), reason=COMMIT_FAILED)

        return effect

    async def _release(self, order: Order) -> Effect:
        """The compensation: stock and any charge go back, then the order is CANCELLED."""
        await self._catalog.release_stock(order_id=order.id)
        refund = await refund_payment(order=order, payments=self._payments)

        async def effect(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            await transitions.cancel(uow, order, reason=saga.reason, refund=refund)
            saga.advance(SagaStep.DONE, now=utc_now())

        return effect

    async def _give_back(self, saga: Saga, order: Order) -> Effect:
        """After a cancellation: the stock (if this service reserved it) and the money."""
        if saga.mode is SagaMode.ORCHESTRATION:
            await self._catalog.release_stock(order_id=order.id)
        refund = await refund_payment(order=order, payments=self._payments)

        async def effect(uow: AbstractUnitOfWork, order: Order, saga: Saga) -> None:
            if refund is not None:
                order.record_refund(refund)
                await uow.orders.save(order)
            saga.advance(SagaStep.DONE, now=utc_now())

        return effect

    async def _store(
        self, order_id: str, step: SagaStep, effect: Effect, on_superseded: Effect | None
    ) -> tuple[Saga, Order] | None:
        """Store a step's outcome; the saga and order as stored if the saga has more steps
        for this worker now, else None."""
        async with self._uow_factory() as uow:
            found = await uow.order_with_saga(order_id, for_update=True)
            if found is None or found[1].claimed_by != self.worker:
                return None  # our claim ran out and another worker took the saga over
            order, saga = found
            if saga.step is step:
                await effect(uow, order, saga)
            elif on_superseded is not None:
                await on_superseded(uow, order, saga)
            if not saga.is_done:
                now = utc_now()
                saga.claim(worker=self.worker, until=now + self.lease, now=now)
            await uow.sagas.save(saga)
            await uow.commit()
        return None if saga.is_done else (saga, order)

    async def _retry_later(self, order_id: str, step: SagaStep, error: str) -> bool:
        """Unclaim the saga until its backoff ends; True when it moved on meanwhile (go on)."""
        async with self._uow_factory() as uow:
            found = await uow.order_with_saga(order_id, for_update=True)
            if found is None or found[1].claimed_by != self.worker:
                return False
            saga = found[1]
            if saga.step is not step:
                return True
            saga.retry_later(error=error, now=utc_now(), policy=self._retry)
            await uow.sagas.save(saga)
            await uow.commit()
        return False
