"""Two refreshes of one token at the same moment: exactly one wins."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from auth_service.adapters.repository import SqlRefreshTokenRepository
from auth_service.bootstrap import AuthApp
from auth_service.domain.model import IssuedTokens, RefreshToken
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import create_engine, is_sqlite, session_factory
from tienda_platform.errors import Unauthenticated

from .interleaving import InterleavingUnitOfWork

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-42"


class _ReadTogetherTokens(SqlRefreshTokenRepository):
    """Holds each reader until both have read the token, so both see it unused."""

    def __init__(self, session: AsyncSession, barrier: asyncio.Barrier) -> None:
        super().__init__(session)
        self._barrier = barrier

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        token = await super().get_by_hash(token_hash)
        await asyncio.wait_for(self._barrier.wait(), timeout=10)
        return token


async def test_concurrent_refreshes_of_one_token_let_exactly_one_win(
    app: AuthApp, database_url: str
) -> None:
    await services.register(
        deps=app.deps, email="ada@example.com", password=PASSWORD, full_name="Ada"
    )
    tokens = await services.login(deps=app.deps, email="ada@example.com", password=PASSWORD)
    deps: Dependencies = app.deps
    engine = None
    if not is_sqlite(database_url):
        # SQLite serialises writers at BEGIN, so only PostgreSQL can interleave the two
        # transactions. Force the worst interleaving there: both read the token unused, and
        # only the conditional UPDATE stands between them.
        engine = create_engine(database_url)
        sessions, barrier = session_factory(engine), asyncio.Barrier(2)
        deps = replace(
            deps,
            uow=lambda: InterleavingUnitOfWork(
                sessions, "refresh_tokens", lambda session: _ReadTogetherTokens(session, barrier)
            ),
        )
    try:
        results = await asyncio.gather(
            services.refresh(deps=deps, refresh_token=tokens.refresh_token),
            services.refresh(deps=deps, refresh_token=tokens.refresh_token),
            return_exceptions=True,
        )
    finally:
        if engine is not None:
            await engine.dispose()
    winners = [r for r in results if isinstance(r, IssuedTokens)]
    losers = [r for r in results if isinstance(r, Unauthenticated)]
    assert (len(winners), len(losers)) == (1, 1), results
    assert losers[0].message == "refresh token reused"
    # The loser counts as a replay, so the winner's new token is revoked with its family.
    with pytest.raises(Unauthenticated, match="revoked"):
        await services.refresh(deps=app.deps, refresh_token=winners[0].refresh_token)
