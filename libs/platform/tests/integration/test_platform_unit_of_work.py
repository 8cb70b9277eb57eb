"""The unit of work every service builds on: one transaction per `async with`, events in the
outbox with it, and the relay woken only after a commit that recorded some."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from events.v1 import events_pb2
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform import outbox
from tienda_platform.database import create_engine, session_factory
from tienda_platform.outbox import OutboxEvent
from tienda_platform.unit_of_work import SqlTransaction

pytestmark = pytest.mark.integration


class Notes(SqlTransaction):
    """A unit of work with one "repository": raw SQL on a table of notes."""

    def _bind(self, session: AsyncSession) -> None:
        self.session = session

    async def write(self, text: str, *, with_event: bool) -> None:
        await self.session.exec(  # type: ignore[call-overload]
            sa.text("INSERT INTO notes (text) VALUES (:text)"), params={"text": text}
        )
        if with_event:
            outbox.record_event(
                self.session,
                source="notes",
                event_type="user.updated",
                subject=f"notes/{text}",
                payload=events_pb2.UserUpdated(user_id=text),
            )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'notes.sqlite'}")
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE notes (text TEXT PRIMARY KEY)"))
        await conn.run_sync(OutboxEvent.metadata.create_all, tables=[OutboxEvent.__table__])  # type: ignore[attr-defined]
    yield engine
    await engine.dispose()


async def _rows(engine: AsyncEngine) -> tuple[list[str], list[str]]:
    async with engine.connect() as conn:
        notes = (await conn.execute(sa.text("SELECT text FROM notes ORDER BY text"))).scalars()
        events = (await conn.execute(sa.text("SELECT subject FROM outbox_events"))).scalars()
        return list(notes), list(events)


async def test_the_relay_is_woken_after_a_commit_that_recorded_events_and_only_then(
    engine: AsyncEngine,
) -> None:
    wakes: list[str] = []
    uow = Notes(session_factory(engine), on_events=lambda: wakes.append("relay"))

    async with uow:
        await uow.write("a", with_event=True)
        assert wakes == []  # not before the commit
        await uow.commit()
    assert wakes == ["relay"]

    async with uow:  # one instance, transactions in a row
        await uow.write("b", with_event=False)
        await uow.commit()
    assert wakes == ["relay"]  # nothing recorded: nothing to wake the relay for

    async with uow:
        await uow.write("c", with_event=True)
        await uow.rollback()  # the event is gone with the note ...
        await uow.write("d", with_event=False)
        await uow.commit()  # ... so this commit recorded none
    assert wakes == ["relay"]
    assert await _rows(engine) == (["a", "b", "d"], ["notes/a"])


async def test_leaving_without_a_commit_keeps_nothing_and_closes_the_session(
    engine: AsyncEngine,
) -> None:
    wakes: list[str] = []
    uow = Notes(session_factory(engine), on_events=lambda: wakes.append("relay"))
    with pytest.raises(RuntimeError, match="the use case failed"):
        async with uow:
            await uow.write("a", with_event=True)
            session = uow.session
            raise RuntimeError("the use case failed")
    assert await _rows(engine) == ([], [])
    assert wakes == []
    assert not session.in_transaction()
    with pytest.raises(AssertionError, match="outside `async with`"):
        await uow.commit()
