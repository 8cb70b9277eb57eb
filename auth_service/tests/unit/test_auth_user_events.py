"""The domain events of account changes, over fakes: which change publishes what."""

from __future__ import annotations

import pytest
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from events.v1 import events_pb2
from tienda_platform.errors import AlreadyExists, InvalidArgument

from .fakes import FakeUnitOfWork, RecordedEvent

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-42"


async def _register(deps: Dependencies, email: str = "ada@example.com") -> str:
    user = await services.register(deps=deps, email=email, password=PASSWORD, full_name=" Ada ")
    return user.id


async def test_register_publishes_user_registered_without_secrets(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    user_id = await _register(deps)
    [event] = uow.published
    assert (event.event_type, event.subject) == ("user.registered", f"users/{user_id}")
    assert event.payload == events_pb2.UserRegistered(
        user_id=user_id, email="ada@example.com", full_name="Ada"
    )
    raw = event.payload.SerializeToString()
    assert (
        PASSWORD.encode() not in raw and uow.users.rows[user_id].password_hash.encode() not in raw
    )


async def test_a_refused_registration_publishes_nothing(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    await _register(deps)
    with pytest.raises(AlreadyExists):
        await _register(deps, "ADA@example.com")
    with pytest.raises(InvalidArgument):
        await services.register(deps=deps, email="x", password="short", full_name="")
    assert [e.event_type for e in uow.published] == ["user.registered"]
    assert uow.pending == []


async def test_a_new_name_publishes_user_updated(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    user_id = await _register(deps)
    await services.update_current_user(
        deps=deps, user_id=user_id, full_name=" Ada King ", password=None, current_password=None
    )
    assert uow.published[-1] == RecordedEvent(
        "user.updated",
        f"users/{user_id}",
        events_pb2.UserUpdated(user_id=user_id, email="ada@example.com", full_name="Ada King"),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"full_name": None, "password": "new-password-7", "current_password": PASSWORD},
        {"full_name": "Ada", "password": None, "current_password": None},
        {"full_name": None, "password": None, "current_password": None},
    ],
    ids=["password only", "same name", "nothing"],
)
async def test_changes_that_leave_the_profile_alone_publish_nothing(
    deps: Dependencies, uow: FakeUnitOfWork, change: dict[str, str | None]
) -> None:
    user_id = await _register(deps)
    await services.update_current_user(deps=deps, user_id=user_id, **change)
    assert [e.event_type for e in uow.published] == ["user.registered"]


async def test_a_new_name_and_password_publish_the_name_only(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    user_id = await _register(deps)
    new_password = "new-password-7"
    await services.update_current_user(
        deps=deps,
        user_id=user_id,
        full_name="Ada King",
        password=new_password,
        current_password=PASSWORD,
    )
    event = uow.published[-1]
    assert event.event_type == "user.updated"
    raw = event.payload.SerializeToString()
    assert new_password.encode() not in raw and PASSWORD.encode() not in raw
    assert uow.users.rows[user_id].password_hash.encode() not in raw


async def test_delete_publishes_user_deleted(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    user_id = await _register(deps)
    await services.delete_current_user(deps=deps, user_id=user_id)
    assert uow.published[-1] == RecordedEvent(
        "user.deleted", f"users/{user_id}", events_pb2.UserDeleted(user_id=user_id)
    )


async def test_a_created_bootstrap_admin_is_made_known_as_an_update_not_a_sign_up(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    """The services that copy users get the admin's name and email (user.updated), and no
    welcome email or registration follows (no user.registered); a restart, which finds the
    admin, publishes nothing more."""
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=PASSWORD)
    (admin,) = uow.users.rows.values()
    assert uow.published == [
        RecordedEvent(
            "user.updated",
            f"users/{admin.id}",
            events_pb2.UserUpdated(
                user_id=admin.id, email="root@example.com", full_name=admin.full_name
            ),
        )
    ]
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=PASSWORD)
    assert len(uow.published) == 1


async def test_promoting_a_registered_user_to_admin_publishes_nothing(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    user_id = await _register(deps)
    registered = list(uow.published)
    email = uow.users.rows[user_id].email
    await services.bootstrap_admin(deps=deps, email=email, password=PASSWORD)
    assert uow.published == registered
