"""What keeps the event tables and streams from growing for ever.

A stream keeps every entry XADD put there until it is trimmed, and `processed_events` keeps a
row for every event a group handled. The outbox relay tidies both now and then (see
OutboxRelay.tidy):

- a stream loses the entries that every consumer group is done with (delivered and
  acknowledged) and that are older than the stream retention (a day by default, so that a
  group created meanwhile still finds that much history; before its first XREADGROUP a group
  declared at 0 has read nothing, and nothing it needs is trimmed). Dead-letter streams are
  never trimmed: they wait for an operator.
- `processed_events` loses the records older than the processed retention (a week by
  default): a redelivery comes from a stream entry, and entries that old are gone, so the
  record has nothing left to guard against.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from tienda_platform.consumers import ProcessedEvent

STREAM_RETENTION = timedelta(days=1)
PROCESSED_RETENTION = timedelta(days=7)


def _entry_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    milliseconds, _, sequence = text.partition("-")
    return int(milliseconds), int(sequence or 0)


async def trim_stream(
    client: Any, stream: str, *, keep: timedelta, now: datetime | None = None
) -> int:
    """Trim the entries of `stream` that every group has acknowledged and that are older than
    `keep`; returns how many went."""
    now = now or datetime.now(UTC)
    # stream ids start with the milliseconds of their XADD
    bound = (int((now - keep).timestamp() * 1000), 0)
    if not await client.exists(stream):
        return 0
    for group in await client.xinfo_groups(stream):
        bound = min(bound, _entry_id(group["last-delivered-id"]))
        if group["pending"]:
            oldest_pending = (await client.xpending(stream, group["name"]))["min"]
            if oldest_pending is not None:  # None: acknowledged since XINFO GROUPS
                bound = min(bound, _entry_id(oldest_pending))
    # MINID removes the entries below the bound: the last delivered entry itself stays
    removed: int = await client.xtrim(stream, minid=f"{bound[0]}-{bound[1]}", approximate=False)
    return removed


async def forget_processed(
    sessions: async_sessionmaker[AsyncSession], *, keep: timedelta, now: datetime | None = None
) -> int:
    """Delete the idempotency records older than `keep`; returns how many went."""
    cutoff = (now or datetime.now(UTC)) - keep
    async with sessions() as session, session.begin():
        result = await session.exec(
            sa.delete(ProcessedEvent).where(col(ProcessedEvent.processed_time) < cutoff)
        )
    return int(result.rowcount or 0)
