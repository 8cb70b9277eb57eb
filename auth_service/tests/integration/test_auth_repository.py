"""The SQL repositories and unit of work on SQLite and PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from auth_service.bootstrap import AuthApp
from auth_service.domain.errors import EmailAlreadyRegistered
from auth_service.domain.model import (
    RefreshToken,
    Role,
    User,
    hash_refresh_token,
    new_refresh_token,
)
from auth_service.service_layer import signing_keys
from tienda_platform.ids import new_id

pytestmark = pytest.mark.integration

NOW = datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)


def _user(email: str = "ada@example.com") -> User:
    return User(
        id=new_id(),
        email=email,
        full_name="Ada Lovelace",
        password_hash="$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
        role=Role.CUSTOMER,
        create_time=NOW,
        update_time=NOW,
    )


def _token(user_id: str, family_id: str | None = None) -> RefreshToken:
    return RefreshToken(
        id=new_id(),
        user_id=user_id,
        family_id=family_id or new_id(),
        token_hash=hash_refresh_token(new_refresh_token()),
        expires_at=NOW + timedelta(days=30),
        create_time=NOW,
    )


async def test_users_round_trip_with_utc_times(app: AuthApp) -> None:
    user = _user()
    async with app.deps.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    async with app.deps.uow() as uow:
        assert await uow.users.get(user.id) == user
        assert await uow.users.get_by_email("ada@example.com") == user
        assert await uow.users.get(new_id()) is None
        assert await uow.users.get_by_email("bob@example.com") is None


async def test_a_taken_email_is_refused_by_the_database(app: AuthApp) -> None:
    async with app.deps.uow() as uow:
        await uow.users.add(_user())
        await uow.commit()
    async with app.deps.uow() as uow:
        with pytest.raises(EmailAlreadyRegistered):
            await uow.users.add(_user())


async def test_without_commit_nothing_is_kept(app: AuthApp) -> None:
    user = _user()
    async with app.deps.uow() as uow:
        await uow.users.add(user)
    async with app.deps.uow() as uow:
        assert await uow.users.get(user.id) is None


async def test_update_and_delete_users(app: AuthApp) -> None:
    user = _user()
    changed = replace(user, full_name="Ada King", role=Role.ADMIN, update_time=NOW + timedelta(1))
    async with app.deps.uow() as uow:
        await uow.users.add(user)
        await uow.commit()
    async with app.deps.uow() as uow:
        await uow.users.update(changed)
        await uow.commit()
    async with app.deps.uow() as uow:
        assert await uow.users.get(user.id) == changed
        await uow.users.delete(user.id)
        await uow.commit()
    async with app.deps.uow() as uow:
        assert await uow.users.get(user.id) is None


async def test_a_token_is_spent_only_once(app: AuthApp) -> None:
    user = _user()
    token = _token(user.id)
    async with app.deps.uow() as uow:
        await uow.users.add(user)
        await uow.refresh_tokens.add(token)
        await uow.commit()
    async with app.deps.uow() as uow:
        assert await uow.refresh_tokens.get_by_hash(token.token_hash) == token
        assert await uow.refresh_tokens.mark_used(token.id, at=NOW) is True
        assert await uow.refresh_tokens.mark_used(token.id, at=NOW) is False
        await uow.commit()
    async with app.deps.uow() as uow:
        stored = await uow.refresh_tokens.get_by_hash(token.token_hash)
        assert stored is not None and stored.used_at == NOW


async def test_revocation_by_family_and_by_user(app: AuthApp) -> None:
    ada, bob = _user(), _user("bob@example.com")
    family = new_id()
    same_family = [_token(ada.id, family), _token(ada.id, family)]
    other_family = _token(ada.id)
    bobs = _token(bob.id)
    async with app.deps.uow() as uow:
        await uow.users.add(ada)
        await uow.users.add(bob)
        for token in [*same_family, other_family, bobs]:
            await uow.refresh_tokens.add(token)
        await uow.refresh_tokens.revoke_family(family, at=NOW)
        await uow.commit()

    async def revoked(token: RefreshToken) -> bool:
        async with app.deps.uow() as uow:
            stored = await uow.refresh_tokens.get_by_hash(token.token_hash)
        assert stored is not None
        return stored.revoked_at is not None

    assert [await revoked(t) for t in [*same_family, other_family, bobs]] == [
        True,
        True,
        False,
        False,
    ]
    async with app.deps.uow() as uow:
        await uow.refresh_tokens.revoke_for_user(ada.id, at=NOW)
        await uow.commit()
    assert [await revoked(t) for t in [other_family, bobs]] == [True, False]


async def test_deleting_a_user_deletes_their_tokens(app: AuthApp) -> None:
    ada, bob = _user(), _user("bob@example.com")
    adas, bobs = _token(ada.id), _token(bob.id)
    async with app.deps.uow() as uow:
        await uow.users.add(ada)
        await uow.users.add(bob)
        await uow.refresh_tokens.add(adas)
        await uow.refresh_tokens.add(bobs)
        await uow.commit()
    async with app.deps.uow() as uow:
        # The foreign key cascades even without delete_for_user.
        await uow.users.delete(ada.id)
        await uow.commit()
    async with app.deps.uow() as uow:
        assert await uow.refresh_tokens.get_by_hash(adas.token_hash) is None
        assert await uow.refresh_tokens.get_by_hash(bobs.token_hash) == bobs


async def test_signing_keys_rotate_and_all_stay_listed(app: AuthApp) -> None:
    first = await signing_keys.ensure_signing_key(deps=app.deps)  # made by prepare()
    second = await signing_keys.rotate_signing_key(deps=app.deps)
    async with app.deps.uow() as uow:
        assert await uow.signing_keys.active() == second
        assert await uow.signing_keys.all() == [replace(first, active=False), second]
