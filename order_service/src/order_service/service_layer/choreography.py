"""order_service's part of the choreographed saga: reactions to product_service's events.

Only orders placed in choreography mode react; orchestrated orders hear the same stock events
(product_service announces every reservation) but their saga already drives them.
"""

from __future__ import annotations

from functools import partial

from order_service.domain.model import Order, SagaMode
from order_service.domain.saga import Saga, SagaStep
from order_service.service_layer import transitions
from order_service.service_layer.ports import SagaRunsHere
from order_service.service_layer.transitions import utc_now
from order_service.service_layer.unit_of_work import AbstractUnitOfWork


async def _pending_choreographed(uow: AbstractUnitOfWork, order_id: str) -> Order | None:
    # orchestrated orders hear these events too: for them the lookup reads no more than a row
    order = await uow.orders.get(order_id, for_update=True, in_mode=SagaMode.CHOREOGRAPHY)
    if order is None or not order.is_pending:
        return None
    return order


async def stock_reserved(
    *, uow: AbstractUnitOfWork, order_id: str, saga_runs_here: SagaRunsHere | None = None
) -> None:
    """The stock is set aside: the payment is due.

    The charge itself runs in the saga worker, outside this handler's transaction: the
    consumer's transaction is already open when a handler starts, and on SQLite the payment
    provider's own write would wait for it. With `saga_runs_here`, the saga is stored claimed
    by this process's worker, which runs it as soon as the transaction commits; otherwise
    any worker claims it from the saga log.
    """
    async with uow:
        order = await _pending_choreographed(uow, order_id)
        if order is None or await uow.sagas.get(order_id) is not None:
            return
        now = utc_now()
        saga = Saga.start(order_id=order_id, mode=SagaMode.CHOREOGRAPHY, step=SagaStep.PAY, now=now)
        if saga_runs_here is not None:
            worker, until = saga_runs_here.lease(now)
            saga.claim(worker=worker, until=until, now=now)
            uow.after_commit(partial(saga_runs_here.adopt, saga, order))
        await uow.sagas.add(saga)
        await uow.commit()


async def stock_rejected(*, uow: AbstractUnitOfWork, order_id: str, reason: str) -> None:
    """No stock for the order: REJECTED with product_service's reason (order.rejected)."""
    async with uow:
        order = await _pending_choreographed(uow, order_id)
        if order is None:
            return
        await transitions.reject(uow, order, reason=reason)
        await uow.commit()


async def stock_released(*, uow: AbstractUnitOfWork, order_id: str) -> None:
    """The compensation after a failed payment is done: CANCELLED with the payment's reason."""
    async with uow:
        order = await _pending_choreographed(uow, order_id)
        if order is None or order.payment_failure is None:
            return
        await transitions.cancel(uow, order, reason=order.payment_failure)
        await uow.commit()
