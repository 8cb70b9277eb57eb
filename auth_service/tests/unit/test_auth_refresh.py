"""Refresh-token rotation and reuse detection over fakes."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auth_service.domain.model import IssuedTokens, hash_refresh_token
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from tienda_platform.auth import TokenVerifier
from tienda_platform.errors import InvalidArgument, Unauthenticated

from .fakes import FakeClock, FakeUnitOfWork

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-42"


async def _logged_in(deps: Dependencies, email: str = "ada@example.com") -> IssuedTokens:
    await services.register(deps=deps, email=email, password=PASSWORD, full_name="Ada")
    return await services.login(deps=deps, email=email, password=PASSWORD)


async def test_refresh_spends_the_token_and_issues_one_of_the_same_family(
    deps: Dependencies, uow: FakeUnitOfWork, verifier: TokenVerifier
) -> None:
    first = await _logged_in(deps)
    second = await services.refresh(deps=deps, refresh_token=first.refresh_token)
    assert second.refresh_token != first.refresh_token
    old = await uow.refresh_tokens.get_by_hash(hash_refresh_token(first.refresh_token))
    new = await uow.refresh_tokens.get_by_hash(hash_refresh_token(second.refresh_token))
    assert old is not None and new is not None
    assert old.used_at is not None and new.used_at is None
    assert old.family_id == new.family_id
    assert (await verifier.verify(second.access_token)).user_id == new.user_id
    third = await services.refresh(deps=deps, refresh_token=second.refresh_token)
    assert third.refresh_token not in (first.refresh_token, second.refresh_token)


async def test_reusing_a_spent_token_revokes_its_whole_family(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    first = await _logged_in(deps)
    other_session = await services.login(deps=deps, email="ada@example.com", password=PASSWORD)
    second = await services.refresh(deps=deps, refresh_token=first.refresh_token)
    commits = uow.commits
    with pytest.raises(Unauthenticated, match="refresh token reused"):
        await services.refresh(deps=deps, refresh_token=first.refresh_token)
    assert uow.commits == commits + 1  # the revocation is kept although the call fails
    with pytest.raises(Unauthenticated, match="revoked"):
        await services.refresh(deps=deps, refresh_token=second.refresh_token)
    # Another login is another family and is untouched.
    untouched = await services.refresh(deps=deps, refresh_token=other_session.refresh_token)
    assert untouched.refresh_token != other_session.refresh_token


async def test_an_expired_refresh_token_fails(deps: Dependencies, clock: FakeClock) -> None:
    tokens = await _logged_in(deps)
    clock.advance(timedelta(days=30))
    with pytest.raises(Unauthenticated, match="expired"):
        await services.refresh(deps=deps, refresh_token=tokens.refresh_token)


async def test_a_token_just_inside_its_lifetime_works(deps: Dependencies, clock: FakeClock) -> None:
    tokens = await _logged_in(deps)
    clock.advance(timedelta(days=30) - timedelta(seconds=1))
    renewed = await services.refresh(deps=deps, refresh_token=tokens.refresh_token)
    assert renewed.refresh_token != tokens.refresh_token and renewed.access_token


@pytest.mark.parametrize("token", ["rt_unknown", "not-even-ours", "rt_" + "x" * 253])
async def test_an_unknown_refresh_token_fails(deps: Dependencies, token: str) -> None:
    await _logged_in(deps)
    with pytest.raises(Unauthenticated, match="invalid refresh token"):
        await services.refresh(deps=deps, refresh_token=token)


@pytest.mark.parametrize("token", ["", "rt_" + "x" * 1_000_000])
async def test_an_empty_or_huge_refresh_token_is_a_bad_request(
    deps: Dependencies, token: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await services.refresh(deps=deps, refresh_token=token)
    assert [v.field for v in raised.value.violations] == ["refresh_token"]


async def test_a_deleted_users_refresh_token_fails(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    tokens = await _logged_in(deps)
    user = await uow.users.get_by_email("ada@example.com")
    assert user is not None
    await services.delete_current_user(deps=deps, user_id=user.id)
    with pytest.raises(Unauthenticated):
        await services.refresh(deps=deps, refresh_token=tokens.refresh_token)


async def test_refresh_carries_the_current_role(
    deps: Dependencies, uow: FakeUnitOfWork, verifier: TokenVerifier
) -> None:
    tokens = await _logged_in(deps)
    await services.bootstrap_admin(deps=deps, email="ada@example.com", password="irrelevant-1")
    refreshed = await services.refresh(deps=deps, refresh_token=tokens.refresh_token)
    assert (await verifier.verify(refreshed.access_token)).is_admin
