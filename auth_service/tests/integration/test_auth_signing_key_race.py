"""Replicas that start together on an empty database, and rotations at the same moment:
the signing keys still end up with one key active."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from functools import partial

import pytest
import sqlalchemy as sa
from auth_service.adapters.orm import SigningKeyRow
from auth_service.adapters.repository import SqlSigningKeyRepository
from auth_service.bootstrap import AuthApp
from auth_service.domain.model import SigningKey
from auth_service.service_layer import signing_keys
from auth_service.service_layer.services import Dependencies
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import create_engine, session_factory

from .interleaving import InterleavingUnitOfWork

pytestmark = pytest.mark.integration

TOGETHER = 3


class _StartTogetherKeys(SqlSigningKeyRepository):
    """Holds each transaction, before its first statement, until all have come that far:
    none has read or written anything when they go on to take turns."""

    def __init__(self, session: AsyncSession, barrier: asyncio.Barrier) -> None:
        super().__init__(session)
        self._barrier = barrier

    async def take_turns(self) -> None:
        await asyncio.wait_for(self._barrier.wait(), timeout=10)
        await super().take_turns()


async def _together(app: AuthApp, database_url: str) -> tuple[Dependencies, AsyncEngine]:
    engine = create_engine(database_url)
    sessions, barrier = session_factory(engine), asyncio.Barrier(TOGETHER)
    uow = partial(
        InterleavingUnitOfWork,
        sessions,
        "signing_keys",
        lambda session: _StartTogetherKeys(session, barrier),
    )
    return replace(app.deps, uow=uow), engine


async def _stored(app: AuthApp) -> list[SigningKey]:
    async with app.deps.uow() as uow:
        return await uow.signing_keys.all()


async def test_replicas_starting_on_an_empty_database_create_one_key(
    app: AuthApp, database_url: str
) -> None:
    deps, engine = await _together(app, database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(sa.delete(SigningKeyRow))
        keys = await asyncio.gather(
            *(signing_keys.ensure_signing_key(deps=deps) for _ in range(TOGETHER))
        )
    finally:
        await engine.dispose()
    stored = await _stored(app)
    assert [key.kid for key in stored] == [keys[0].kid]
    assert {key.kid for key in keys} == {keys[0].kid}


async def test_rotations_at_the_same_moment_leave_one_key_active(
    app: AuthApp, database_url: str
) -> None:
    (first,) = await _stored(app)
    deps, engine = await _together(app, database_url)
    try:
        rotated = await asyncio.gather(
            *(signing_keys.rotate_signing_key(deps=deps) for _ in range(TOGETHER))
        )
    finally:
        await engine.dispose()
    stored = await _stored(app)
    assert {key.kid for key in stored} == {first.kid} | {key.kid for key in rotated}
    assert len([key for key in stored if key.active]) == 1
