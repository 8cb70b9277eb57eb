"""Account changes publish their events through the transactional outbox, on real databases
and a real Redis: same transaction as the change, relayed to a consumer group, and delayed but
not lost (nor blocking anything) while Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from auth_service.bootstrap import AuthApp, bootstrap
from auth_service.config import Settings
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from auth_service.service_layer.unit_of_work import SqlUnitOfWork
from events.v1 import events_pb2
from faststream.redis import RedisBroker
from google.protobuf.message import Message
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_contracts.topology import AUTH_EVENTS
from tienda_platform.aio import cancel_and_wait
from tienda_platform.consumers import EventConsumer
from tienda_platform.database import session_factory
from tienda_platform.events import EventEnvelope
from tienda_platform.redis_server import EmbeddedRedis, free_port
from tienda_platform.testing import eventually

from .auth_streams import Published, about, outbox_rows, stream_events
from .conftest import ADMIN_EMAIL, ADMIN_PASSWORD

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-42"
NEW_PASSWORD = "battery-staple-77"


async def _register(deps: Dependencies, email: str = "ada@example.com") -> str:
    user = await services.register(
        deps=deps, email=email, password=PASSWORD, full_name="Ada Lovelace"
    )
    return user.id


async def _change_everything(deps: Dependencies) -> str:
    """Register, rename, change the password (no event), delete; returns the user id."""
    user_id = await _register(deps)
    await services.update_current_user(
        deps=deps, user_id=user_id, full_name="Ada King", password=None, current_password=None
    )
    await services.update_current_user(
        deps=deps,
        user_id=user_id,
        full_name=None,
        password=NEW_PASSWORD,
        current_password=PASSWORD,
    )
    await services.delete_current_user(deps=deps, user_id=user_id)
    return user_id


def _expected(user_id: str) -> list[Message]:
    return [
        events_pb2.UserRegistered(
            user_id=user_id, email="ada@example.com", full_name="Ada Lovelace"
        ),
        events_pb2.UserUpdated(user_id=user_id, email="ada@example.com", full_name="Ada King"),
        events_pb2.UserDeleted(user_id=user_id),
    ]


def _assert_the_changes_of(user_id: str, events: list[Published]) -> None:
    assert [e.summary for e in events] == [
        (event_type, f"users/{user_id}", "auth_service")
        for event_type in ("user.registered", "user.updated", "user.deleted")
    ]
    assert [e.payload for e in events] == _expected(user_id)
    for event in events:
        assert PASSWORD.encode() not in event.raw and NEW_PASSWORD.encode() not in event.raw
        assert b"$argon2" not in event.raw


class FailsAfterRecording(SqlUnitOfWork):
    """A unit of work that crashes right after an event is recorded, before the commit."""

    def record_event(self, **event: Any) -> None:
        super().record_event(**event)
        raise RuntimeError("crash between record_event and commit")


async def test_each_change_commits_with_its_event(app: AuthApp) -> None:
    assert app.engine is not None
    user_id = await _change_everything(app.deps)
    rows = await outbox_rows(app.engine)
    _assert_the_changes_of(user_id, about(user_id, [event for event, _ in rows]))
    assert [sent for _, sent in rows] == [False] * 4  # the admin's and Ada's; no relay here


async def test_a_failure_after_recording_rolls_back_the_change_and_its_event(
    app: AuthApp,
) -> None:
    assert app.engine is not None
    failing = replace(app.deps, uow=partial(FailsAfterRecording, session_factory(app.engine)))

    with pytest.raises(RuntimeError):
        await _register(failing)
    async with app.deps.uow() as uow:
        assert await uow.users.get_by_email("ada@example.com") is None
    # only the bootstrap admin's creation (see test_the_bootstrap_admin_is_made_known)
    assert [e.envelope.type for e, _ in await outbox_rows(app.engine)] == ["user.updated"]

    user_id = await _register(app.deps)
    with pytest.raises(RuntimeError):
        await services.update_current_user(
            deps=failing,
            user_id=user_id,
            full_name="Ada King",
            password=None,
            current_password=None,
        )
    with pytest.raises(RuntimeError):
        await services.delete_current_user(deps=failing, user_id=user_id)
    user = await services.get_current_user(deps=app.deps, user_id=user_id)
    assert user.full_name == "Ada Lovelace"
    assert [e.envelope.type for e, _ in await outbox_rows(app.engine)] == [
        "user.updated",
        "user.registered",
    ]


@asynccontextmanager
async def running(settings: Settings, *, redis_url: str) -> AsyncIterator[AuthApp]:
    """auth_service on redis_url, prepared, with its background jobs (the relay) running."""
    app = bootstrap(settings=settings.model_copy(update={"redis_url": redis_url}))
    await app.prepare()
    jobs = [asyncio.create_task(job()) for job in app.background]
    try:
        yield app
    finally:
        await cancel_and_wait(jobs)
        await app.close()


async def test_a_consumer_group_receives_user_registered_from_the_relay(
    settings: Settings, redis_url: str
) -> None:
    received: list[tuple[EventEnvelope, Message]] = []

    async def remember(session: AsyncSession, envelope: EventEnvelope, payload: Message) -> None:
        received.append((envelope, payload))

    async with running(settings, redis_url=redis_url) as app:
        assert app.engine is not None
        broker = RedisBroker(redis_url)
        consumer = EventConsumer(
            broker=broker, engine=app.engine, group="auth-tests", consumer="auth-tests-1"
        )
        consumer.on(AUTH_EVENTS, "user.registered", remember)
        await consumer.declare()
        await broker.start()
        try:
            user_id = await _register(app.deps)
            await eventually(lambda: len(received) == 1)
            [(envelope, payload)] = received
            assert (envelope.type, envelope.subject, envelope.source) == (
                "user.registered",
                f"users/{user_id}",
                "auth_service",
            )
            assert payload == _expected(user_id)[0]
            [entry] = about(user_id, await stream_events(redis_url))
            assert entry.envelope == envelope
            assert PASSWORD.encode() not in entry.raw and b"$argon2" not in entry.raw
            await eventually(lambda: _all_sent(app))
        finally:
            await broker.stop()


async def _all_sent(app: AuthApp) -> bool:
    assert app.engine is not None
    return all(sent for _, sent in await outbox_rows(app.engine))


async def test_changes_commit_while_redis_is_down_and_their_events_follow(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    async with running(settings, redis_url=f"redis://127.0.0.1:{port}/0") as app:
        assert app.engine is not None
        user_id = await asyncio.wait_for(_change_everything(app.deps), timeout=10)
        async with app.deps.uow() as uow:
            assert await uow.users.get(user_id) is None  # the delete committed
        rows = await outbox_rows(app.engine)
        _assert_the_changes_of(user_id, about(user_id, [event for event, _ in rows]))
        assert not any(sent for _, sent in rows)

        with EmbeddedRedis(tmp_path / "redis", port=port) as server:
            await eventually(lambda: _stream_length(server.url, 4), within=30)
            _assert_the_changes_of(user_id, about(user_id, await stream_events(server.url)))
            await eventually(lambda: _all_sent(app))


async def _stream_length(redis_url: str, length: int) -> bool:
    return len(await stream_events(redis_url)) == length


async def test_the_bootstrap_admin_is_made_known_to_the_services_that_copy_users(
    app: AuthApp,
) -> None:
    """Created at start, the admin is in the outbox as user.updated (name and email, for
    order_service's customer snapshot), in the transaction that created it."""
    assert app.engine is not None
    async with app.deps.uow() as uow:
        admin = await uow.users.get_by_email(ADMIN_EMAIL)
    assert admin is not None
    [(event, _)] = await outbox_rows(app.engine)
    assert event.summary == ("user.updated", f"users/{admin.id}", "auth_service")
    assert event.payload == events_pb2.UserUpdated(
        user_id=admin.id, email=ADMIN_EMAIL, full_name=admin.full_name
    )
    assert ADMIN_PASSWORD.encode() not in event.raw and b"$argon2" not in event.raw
