"""The simulated payment provider: which tokens pay, and answers kept by idempotency key in
the database, so that a retry after a crash (a new provider on the same database) gets the
first answer."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from order_service.adapters.orm import PaymentChargeRow
from order_service.adapters.payments import SimulatedPaymentProvider
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select
from tienda_platform.database import session_factory

pytestmark = pytest.mark.integration


@pytest.fixture
def provider(engine: AsyncEngine) -> SimulatedPaymentProvider:
    return SimulatedPaymentProvider(session_factory(engine))


async def stored(engine: AsyncEngine) -> list[PaymentChargeRow]:
    async with session_factory(engine)() as session:
        return list((await session.exec(select(PaymentChargeRow))).all())


@pytest.mark.parametrize(
    ("token", "approved"), [("tok_ok", True), ("tok_declined", False), ("tok_other", False)]
)
async def test_tokens_decide_the_answer(
    provider: SimulatedPaymentProvider, token: str, approved: bool
) -> None:
    result = await provider.charge(
        token=token, amount_cents=100, idempotency_key="k", answer_within=5
    )
    assert result.approved is approved
    assert result.provider_reference.startswith("sim_ch_")


async def test_tok_timeout_never_answers_and_stores_nothing(
    provider: SimulatedPaymentProvider, engine: AsyncEngine
) -> None:
    with pytest.raises(TimeoutError):
        await provider.charge(
            token="tok_timeout", amount_cents=100, idempotency_key="k", answer_within=0.05
        )
    assert await stored(engine) == []


async def test_a_slow_database_does_not_time_a_charge_out(
    provider: SimulatedPaymentProvider, engine: AsyncEngine
) -> None:
    """The timeout bounds the provider's answer, not its bookkeeping: a charge whose record
    waits for a write lock held longer than the timeout is still approved."""
    async with session_factory(engine)() as holder, holder.begin():
        # on SQLite the session's first statement begins IMMEDIATE: it takes the write lock
        lock = "SELECT 1" if engine.dialect.name == "sqlite" else "LOCK TABLE payment_charges"
        await holder.exec(sa.text(lock))  # type: ignore[call-overload]
        charge = asyncio.create_task(
            provider.charge(
                token="tok_ok", amount_cents=100, idempotency_key="k", answer_within=0.05
            )
        )
        done, _ = await asyncio.wait({charge}, timeout=0.3)
        assert not done, "the charge was recorded while the lock was held"
        await holder.rollback()
    result = await asyncio.wait_for(charge, 10)
    assert result.approved
    assert [r.idempotency_key for r in await stored(engine)] == ["k"]


async def test_the_same_key_gives_the_first_answer_even_after_a_restart(
    provider: SimulatedPaymentProvider, engine: AsyncEngine
) -> None:
    first = await provider.charge(
        token="tok_ok", amount_cents=100, idempotency_key="order-1", answer_within=5
    )
    restarted = SimulatedPaymentProvider(session_factory(engine))
    again = await restarted.charge(
        token="tok_declined", amount_cents=100, idempotency_key="order-1", answer_within=5
    )
    other = await restarted.charge(
        token="tok_ok", amount_cents=100, idempotency_key="order-2", answer_within=5
    )
    assert again == first
    assert other.provider_reference != first.provider_reference

    refund = await provider.refund(
        charge_reference=first.provider_reference, amount_cents=100, idempotency_key="r-1"
    )
    assert refund.startswith("sim_re_")
    assert refund == await restarted.refund(
        charge_reference=first.provider_reference, amount_cents=100, idempotency_key="r-1"
    )
    rows = await stored(engine)
    assert sorted((r.idempotency_key, r.kind) for r in rows) == [
        ("order-1", "charge"),
        ("order-2", "charge"),
        ("r-1", "refund"),
    ]


async def test_concurrent_charges_with_one_key_charge_once(
    provider: SimulatedPaymentProvider, engine: AsyncEngine
) -> None:
    answers = await asyncio.gather(
        *(
            provider.charge(token="tok_ok", amount_cents=5, idempotency_key="same", answer_within=5)
            for _ in range(5)
        )
    )
    assert len({a.provider_reference for a in answers}) == 1
    assert len(await stored(engine)) == 1
