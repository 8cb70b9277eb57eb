"""wait_for_event: the idle wait of the relay and the workers."""

from __future__ import annotations

import asyncio

import pytest
from tienda_platform.aio import wait_for_event


async def test_returns_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_for_event(event, 0.01) is False
    event.set()
    assert await wait_for_event(event, 10) is True


async def test_a_cancellation_that_meets_the_event_is_not_swallowed() -> None:
    # the moment a loop is stopped (cancelled) just as something wakes it: with
    # asyncio.wait_for on Python 3.11 the wait returns normally and the loop runs on forever
    event = asyncio.Event()
    waiting = asyncio.create_task(wait_for_event(event, 10))
    await asyncio.sleep(0)  # the task runs until it waits for the event
    assert not waiting.done()
    event.set()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
