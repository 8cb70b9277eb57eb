"""Reading, updating and deleting accounts over fakes, and who may read whom."""

from __future__ import annotations

from datetime import timedelta

import pytest
from auth_service.domain.model import User
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from tienda_platform.auth import Principal
from tienda_platform.errors import InvalidArgument, NotFound, PermissionDenied, Unauthenticated
from tienda_platform.ids import new_id

from .fakes import FakeClock, FakeUnitOfWork

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-42"


async def _user(deps: Dependencies, email: str = "ada@example.com") -> User:
    return await services.register(deps=deps, email=email, password=PASSWORD, full_name="Ada")


def _caller(user_id: str, role: str = "customer") -> Principal:
    return Principal(user_id=user_id, role=role, token="unused")


async def test_a_user_may_read_themself(deps: Dependencies) -> None:
    ada = await _user(deps)
    assert (await services.get_user(deps=deps, caller=_caller(ada.id), user_id=ada.id)).id == ada.id


async def test_an_admin_may_read_anyone(deps: Dependencies) -> None:
    ada = await _user(deps)
    admin = _caller(new_id(), "admin")
    assert (await services.get_user(deps=deps, caller=admin, user_id=ada.id)).email == ada.email


async def test_a_customer_may_not_read_another_user(deps: Dependencies) -> None:
    ada = await _user(deps)
    bob = await _user(deps, "bob@example.com")
    with pytest.raises(PermissionDenied):
        await services.get_user(deps=deps, caller=_caller(bob.id), user_id=ada.id)


async def test_a_customer_cannot_tell_unknown_ids_from_forbidden_ones(deps: Dependencies) -> None:
    bob = await _user(deps, "bob@example.com")
    with pytest.raises(PermissionDenied):
        await services.get_user(deps=deps, caller=_caller(bob.id), user_id=new_id())


async def test_an_unknown_id_is_not_found_for_an_admin(deps: Dependencies) -> None:
    with pytest.raises(NotFound):
        await services.get_user(deps=deps, caller=_caller(new_id(), "admin"), user_id=new_id())


@pytest.mark.parametrize("user_id", ["", "42", "not-a-uuid", "x" * 1_000_000])
async def test_a_malformed_id_is_a_bad_request(deps: Dependencies, user_id: str) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await services.get_user(deps=deps, caller=_caller(new_id(), "admin"), user_id=user_id)
    assert [v.field for v in raised.value.violations] == ["id"]


async def test_update_changes_the_name_and_the_update_time(
    deps: Dependencies, clock: FakeClock
) -> None:
    ada = await _user(deps)
    clock.advance(timedelta(seconds=5))
    updated = await services.update_current_user(
        deps=deps, user_id=ada.id, full_name=" Ada King ", password=None, current_password=None
    )
    assert updated.full_name == "Ada King"
    assert updated.update_time > ada.update_time and updated.create_time == ada.create_time
    assert (await services.get_current_user(deps=deps, user_id=ada.id)).full_name == "Ada King"


async def test_an_empty_update_changes_nothing(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    ada = await _user(deps)
    commits = uow.commits
    same = await services.update_current_user(
        deps=deps, user_id=ada.id, full_name=None, password=None, current_password=None
    )
    assert same == ada and uow.commits == commits


async def test_a_new_password_needs_the_current_one(deps: Dependencies) -> None:
    ada = await _user(deps)
    with pytest.raises(InvalidArgument) as missing:
        await services.update_current_user(
            deps=deps,
            user_id=ada.id,
            full_name=None,
            password="new-password-7",
            current_password=None,
        )
    assert [v.field for v in missing.value.violations] == ["current_password"]
    with pytest.raises(InvalidArgument, match="current_password"):
        await services.update_current_user(
            deps=deps,
            user_id=ada.id,
            full_name=None,
            password="new-password-7",
            current_password="wrong-password-1",
        )


async def test_a_new_password_must_follow_the_policy(deps: Dependencies) -> None:
    ada = await _user(deps)
    with pytest.raises(InvalidArgument) as raised:
        await services.update_current_user(
            deps=deps, user_id=ada.id, full_name=None, password="short", current_password=PASSWORD
        )
    assert [v.field for v in raised.value.violations] == ["password"]


async def test_changing_the_password_ends_other_sessions(deps: Dependencies) -> None:
    ada = await _user(deps)
    session = await services.login(deps=deps, email=ada.email, password=PASSWORD)
    await services.update_current_user(
        deps=deps,
        user_id=ada.id,
        full_name=None,
        password="new-password-7",
        current_password=PASSWORD,
    )
    with pytest.raises(Unauthenticated, match="revoked"):
        await services.refresh(deps=deps, refresh_token=session.refresh_token)
    with pytest.raises(Unauthenticated):
        await services.login(deps=deps, email=ada.email, password=PASSWORD)
    await services.login(deps=deps, email=ada.email, password="new-password-7")


async def test_delete_removes_the_user_and_their_refresh_tokens(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    ada = await _user(deps)
    bob = await _user(deps, "bob@example.com")
    await services.login(deps=deps, email=ada.email, password=PASSWORD)
    await services.login(deps=deps, email=bob.email, password=PASSWORD)
    await services.delete_current_user(deps=deps, user_id=ada.id)
    assert list(uow.users.rows) == [bob.id]
    assert {t.user_id for t in uow.refresh_tokens.rows.values()} == {bob.id}
    with pytest.raises(Unauthenticated):
        await services.get_current_user(deps=deps, user_id=ada.id)
    with pytest.raises(Unauthenticated):
        await services.delete_current_user(deps=deps, user_id=ada.id)
