"""wait_for_event, the idle wait of the relay and the workers; cancel_and_wait, which stops
them."""

from __future__ import annotations

import asyncio
import contextlib
import sys

import pytest
from loguru import logger
from tienda_platform.aio import cancel_and_wait, wait_for_event


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


class _Client:
    """A client library that, like some do, turns a cancellation arriving while it waits for
    a reply into an error of its own."""

    def __init__(self) -> None:
        self.replying = asyncio.Event()

    async def call(self) -> None:
        try:
            await self.replying.wait()
        except asyncio.CancelledError:
            raise ConnectionError("connection closed while reading") from None


async def test_a_loop_that_lost_its_cancellation_is_cancelled_until_it_ends() -> None:
    client = _Client()
    stopped = False

    async def loop_that_retries_on_errors() -> None:
        while not stopped:
            # an error is logged and the call retried, as the relay and the workers do
            with contextlib.suppress(Exception):
                await client.call()
            await asyncio.sleep(0.01)

    looping = asyncio.create_task(loop_that_retries_on_errors())
    try:
        await asyncio.sleep(0)  # waiting for a reply
        looping.cancel()
        # one cancellation is not enough: the loop took it for an error and runs on
        done, _ = await asyncio.wait([looping], timeout=0.2)
        assert not done
        client.replying.set()  # replies come: the loop mostly sleeps between calls
        async with asyncio.timeout(5):
            await cancel_and_wait([looping])
        assert looping.cancelled()
    finally:
        stopped = True  # a failure above must not leave the loop running past the test
        await asyncio.wait([looping], timeout=1)


async def test_the_cancellation_python_3_11s_wait_for_swallows_is_repeated() -> None:
    # redis-py sends every command through asyncio.wait_for when a socket timeout is set (its
    # default): on Python 3.11 a cancellation that arrives once the awaited call has finished
    # is dropped, and the call returns as if nothing had happened
    items: asyncio.Queue[int] = asyncio.Queue()
    handled: list[int] = []

    async def consume() -> None:
        while True:
            handled.append(await asyncio.wait_for(items.get(), 10))

    consuming = asyncio.create_task(consume())
    await asyncio.sleep(0)  # waiting for an item
    items.put_nowait(1)
    consuming.cancel()  # in the same turn of the event loop
    done, _ = await asyncio.wait([consuming], timeout=0.2)
    if sys.version_info < (3, 12):  # 3.12's wait_for passes the cancellation on
        assert not done and handled == [1]  # it was dropped: the loop waits for the next item
    await cancel_and_wait([consuming])
    assert consuming.cancelled()


async def test_a_task_slow_to_stop_is_logged_with_where_it_waits() -> None:
    messages: list[str] = []
    sink = logger.add(lambda m: messages.append(m.record["message"]), level="WARNING")

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.shield(asyncio.sleep(0.3))  # cleaning up
            raise

    try:
        stopping = asyncio.create_task(slow_to_stop(), name="slow-job")
        await asyncio.sleep(0)
        await cancel_and_wait([stopping], warn_after=0.05)
    finally:
        logger.remove(sink)
    assert stopping.cancelled()
    assert len(messages) == 1
    assert "slow-job has not stopped" in messages[0]
    assert "slow_to_stop" in messages[0]


async def test_tasks_already_ended_and_their_errors_are_taken_quietly() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    failed = asyncio.create_task(fails())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.wait([failed, finished])
    async with asyncio.timeout(1):
        await cancel_and_wait([failed, finished])
    assert isinstance(failed.exception(), RuntimeError) and finished.result() is None
