"""The payment provider simulator, behind the PaymentProvider port a real provider would fill.

`tok_ok` is approved, `tok_declined` is declined, `tok_timeout` never answers (the charge
raises TimeoutError after its timeout); any other token is declined.

Like a real provider it remembers every answer by idempotency key, durably (table
payment_charges), so a charge retried after a crash gets the first answer instead of a
second charge. It keeps that record in transactions of its own: callers must not hold a
database transaction while they charge (on SQLite that one would block this one).
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import new_row
from tienda_platform.ids import new_id

from order_service.adapters.orm import PaymentChargeRow
from order_service.service_layer.ports import ChargeResult, PaymentProvider

APPROVED_TOKEN = "tok_ok"
TIMEOUT_TOKEN = "tok_timeout"


class SimulatedPaymentProvider(PaymentProvider):
    """An in-process provider that keeps its answers by idempotency key, as real ones do."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def charge(
        self, *, token: str, amount_cents: int, idempotency_key: str, answer_within: float
    ) -> ChargeResult:
        # answer_within bounds the simulated round trip only. The bookkeeping stands for the
        # provider's own database: waiting for this service's database (SQLite's write lock
        # in a burst) must not turn an approved charge into a timed-out one. It is shielded
        # so that a caller's cancellation never stops it halfway through a transaction.
        async with asyncio.timeout(answer_within):
            if token == TIMEOUT_TOKEN:
                await asyncio.get_running_loop().create_future()
        known = await self._remember(
            new_row(
                PaymentChargeRow,
                idempotency_key=idempotency_key,
                kind="charge",
                approved=token == APPROVED_TOKEN,
                amount_cents=amount_cents,
                provider_reference=f"sim_ch_{new_id()}",
                create_time=datetime.now(UTC),
            )
        )
        return ChargeResult(approved=known.approved, provider_reference=known.provider_reference)

    async def refund(
        self, *, charge_reference: str, amount_cents: int, idempotency_key: str
    ) -> str:
        known = await self._remember(
            new_row(
                PaymentChargeRow,
                idempotency_key=idempotency_key,
                kind="refund",
                approved=True,
                amount_cents=amount_cents,
                provider_reference=f"sim_re_{new_id()}",
                create_time=datetime.now(UTC),
            )
        )
        return known.provider_reference

    async def _answer(self, idempotency_key: str) -> PaymentChargeRow | None:
        async with self._sessions() as session:
            return await session.get(PaymentChargeRow, idempotency_key)

    async def _remember(self, answer: PaymentChargeRow) -> PaymentChargeRow:
        """Store answer, unless a call with its idempotency key stored one first (an earlier
        attempt, or a concurrent one): then that one is the answer. The insert comes first
        and the read only on a conflict, so a new charge is one transaction."""
        return await asyncio.shield(self._store(answer))

    async def _store(self, answer: PaymentChargeRow) -> PaymentChargeRow:
        try:
            async with self._sessions() as session, session.begin():
                session.add(answer)
        except IntegrityError:
            first = await self._answer(answer.idempotency_key)
            assert first is not None, "an idempotency key conflicted with no stored row"
            return first
        return answer
