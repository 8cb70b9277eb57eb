"""The saga worker: a background job that claims due sagas from the saga log and runs them.

Claims are leases: a worker that dies leaves its sagas claimed until the lease runs out, then
any worker (this process restarted, or another replica) resumes them from their last stored
step. A worker that stops gracefully hands its claims back at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from datetime import datetime

from loguru import logger
from tienda_platform.aio import cancel_and_wait, wait_for_event
from tienda_platform.database import connection_lost

from order_service.domain.model import Order
from order_service.domain.saga import Saga
from order_service.service_layer.order_saga import SagaRunner
from order_service.service_layer.transitions import utc_now
from order_service.service_layer.unit_of_work import AbstractUnitOfWork


class SagaWorker:
    """Runs up to `concurrency` sagas at once; wakes on notify() or every poll_seconds."""

    def __init__(
        self,
        *,
        uow_factory: Callable[[], AbstractUnitOfWork],
        runner: SagaRunner,
        poll_seconds: float = 0.5,
        concurrency: int = 64,
    ) -> None:
        self._uow_factory = uow_factory
        self._runner = runner
        self._poll = poll_seconds
        self._concurrency = concurrency
        self._wake = asyncio.Event()
        self._adopted: set[asyncio.Task[None]] = set()

    def lease(self, now: datetime) -> tuple[str, datetime]:
        """A claim for a saga this process is about to store: this worker, and until when."""
        return self._runner.worker, now + self._runner.lease

    def adopt(self, saga: Saga, order: Order) -> None:
        """Run at once a saga just stored with a claim from `lease`, from its stored state:
        no claim and no read of the saga log. Should this process stop first, the claim runs
        out and any worker takes the saga up from the log."""
        # in a context of its own, like the sagas claimed from the log: nothing of the request
        # that placed the order (its caller, its span) carries over, but the saga's trace parent
        task = asyncio.create_task(
            self._drive(saga.order_id, (saga, order)), context=contextvars.Context()
        )
        self._adopted.add(task)
        task.add_done_callback(self._adopted.discard)

    def notify(self) -> None:
        """A saga may have become due (an order was placed, cancelled, or an event arrived)."""
        self._wake.set()

    async def run(self) -> None:
        """Claim and drive sagas until cancelled."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                self._wake.clear()
                free = self._concurrency - len(running)
                if free > 0:
                    for order_id in await self._claim_safely(free):
                        task = asyncio.create_task(self._drive(order_id))
                        running.add(task)
                        task.add_done_callback(running.discard)
                        task.add_done_callback(lambda _task: self._wake.set())
                await wait_for_event(self._wake, self._poll)
        finally:
            await cancel_and_wait(running | self._adopted)
            with contextlib.suppress(Exception):
                await asyncio.shield(self._unclaim_all())

    async def drain(self) -> None:
        """Drive every due saga now, until none is due (sagas waiting for a retry are not)."""
        while order_ids := await self.claim(limit=self._concurrency):
            await asyncio.gather(*(self._drive(order_id) for order_id in order_ids))

    async def claim(self, *, limit: int) -> list[str]:
        """Claim up to limit due sagas for this worker; their order ids."""
        now = utc_now()
        async with self._uow_factory() as uow:
            order_ids = await uow.sagas.claim_due(
                worker=self._runner.worker, now=now, until=now + self._runner.lease, limit=limit
            )
            if order_ids:
                await uow.commit()
        return order_ids

    async def _claim_safely(self, limit: int) -> list[str]:
        try:
            return await self.claim(limit=limit)
        except Exception as error:
            logger.warning("saga worker cannot claim sagas yet: {error}", error=repr(error)[:200])
            return []

    async def _drive(self, order_id: str, loaded: tuple[Saga, Order] | None = None) -> None:
        try:
            await self._runner.drive(order_id, loaded)
        except Exception as error:
            # the claim runs out and the saga is taken up again; nothing is lost
            if connection_lost(error):  # an outage of the database; every step is idempotent
                logger.warning(
                    "saga worker cannot reach the database: {error}",
                    error=repr(error)[:200],
                    order_id=order_id,
                )
                return
            logger.opt(exception=error).error(
                "saga worker failed on a saga: {error}", error=repr(error)[:200], order_id=order_id
            )

    async def _unclaim_all(self) -> None:
        async with self._uow_factory() as uow:
            await uow.sagas.unclaim_all(worker=self._runner.worker, now=utc_now())
            await uow.commit()
