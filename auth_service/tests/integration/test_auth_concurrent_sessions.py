"""A refresh, a replayed token and a password change of one user at the same moment, on SQLite
and PostgreSQL: no new token escapes a revocation, and no update writes an old password back.

Each test stops one transaction just before its commit (its statements sent) and starts the
other: the other must wait for it (a bounded wait shows it does), and what it does next
depends on what it then sees.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from dataclasses import replace
from typing import Any

import pytest
from auth_service.bootstrap import AuthApp
from auth_service.domain.model import IssuedTokens
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from auth_service.service_layer.unit_of_work import SqlUnitOfWork
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform import testing
from tienda_platform.database import session_factory
from tienda_platform.errors import InvalidArgument, Unauthenticated

pytestmark = pytest.mark.integration

EMAIL, PASSWORD, NEW_PASSWORD = "ada@example.com", "correct-horse-42", "battery-staple-77"
# long enough for a transaction that does not wait to finish; the waits below are bounded
NOT_WAITING = 1.0


class HeldAtCommit(testing.HeldAtCommit, SqlUnitOfWork):
    """A unit of work that stops before its commit, its statements sent, until released."""


class Race:
    """The first use case runs with a unit of work held at its commit; the second, started
    then, runs as usual."""

    def __init__(
        self, deps: Dependencies, sessions: async_sessionmaker[AsyncSession], user_id: str
    ) -> None:
        self.user_id = user_id
        self.held = HeldAtCommit(sessions)
        self.first_deps = replace(deps, uow=lambda: self.held)
        self.deps = deps

    def change_password(
        self, *, held: bool = False, to: str = NEW_PASSWORD
    ) -> Coroutine[Any, Any, Any]:
        """The user changes PASSWORD to `to`, with the unit of work held at its commit or not."""
        return services.update_current_user(
            deps=self.first_deps if held else self.deps,
            user_id=self.user_id,
            full_name=None,
            password=to,
            current_password=PASSWORD,
        )

    async def run(
        self, first: Coroutine[Any, Any, Any], second: Coroutine[Any, Any, Any]
    ) -> tuple[Any, Any]:
        first_task = asyncio.create_task(first)
        await asyncio.wait_for(self.held.reached.wait(), 10)
        second_task = asyncio.create_task(second)
        done, _ = await asyncio.wait({second_task}, timeout=NOT_WAITING)
        waited = not done
        self.held.release.set()
        results = await asyncio.wait_for(
            asyncio.gather(first_task, second_task, return_exceptions=True), 10
        )
        assert waited, f"the second did not wait for the first: {results}"
        return results[0], results[1]


@pytest.fixture
async def race(app: AuthApp) -> AsyncIterator[Race]:
    assert app.engine is not None
    user = await services.register(deps=app.deps, email=EMAIL, password=PASSWORD, full_name="Ada")
    yield Race(app.deps, session_factory(app.engine), user.id)


async def test_a_replay_during_a_refresh_revokes_the_token_that_refresh_issues(
    race: Race,
) -> None:
    spent = await services.login(deps=race.deps, email=EMAIL, password=PASSWORD)
    current = await services.refresh(deps=race.deps, refresh_token=spent.refresh_token)

    issued, replayed = await race.run(
        services.refresh(deps=race.first_deps, refresh_token=current.refresh_token),
        services.refresh(deps=race.deps, refresh_token=spent.refresh_token),
    )
    assert isinstance(issued, IssuedTokens)
    assert isinstance(replayed, Unauthenticated) and replayed.message == "refresh token reused"
    with pytest.raises(Unauthenticated, match="revoked"):
        await services.refresh(deps=race.deps, refresh_token=issued.refresh_token)


async def test_a_refresh_during_a_password_change_gets_nothing(race: Race) -> None:
    tokens = await services.login(deps=race.deps, email=EMAIL, password=PASSWORD)
    changed, refreshed = await race.run(
        race.change_password(held=True),
        services.refresh(deps=race.deps, refresh_token=tokens.refresh_token),
    )
    assert not isinstance(changed, BaseException), changed
    # the session was ended by the new password, though its refresh came in the meantime
    assert isinstance(refreshed, Unauthenticated), refreshed


async def test_a_name_change_during_a_password_change_keeps_the_new_password(
    race: Race,
) -> None:
    changed, renamed = await race.run(
        race.change_password(held=True),
        services.update_current_user(
            deps=race.deps,
            user_id=race.user_id,
            full_name="Ada Lovelace",
            password=None,
            current_password=None,
        ),
    )
    assert not isinstance(changed, BaseException), changed
    assert not isinstance(renamed, BaseException), renamed
    with pytest.raises(Unauthenticated):
        await services.login(deps=race.deps, email=EMAIL, password=PASSWORD)
    await services.login(deps=race.deps, email=EMAIL, password=NEW_PASSWORD)
    user = await services.get_current_user(deps=race.deps, user_id=race.user_id)
    assert user.full_name == "Ada Lovelace"


async def test_a_second_password_change_checked_against_the_old_password_is_refused(
    race: Race,
) -> None:
    """Two sessions change the password at once, both knowing the old one: the second was
    checked against a hash that is gone by the time it writes, so it is refused."""
    first, second = await race.run(
        race.change_password(held=True),
        race.change_password(to="another-pass-99"),
    )
    assert not isinstance(first, BaseException), first
    assert isinstance(second, InvalidArgument), second
    await services.login(deps=race.deps, email=EMAIL, password=NEW_PASSWORD)
