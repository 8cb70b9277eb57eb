"""asyncio helpers the background loops share."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

from loguru import logger


async def wait_for_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until event is set or seconds pass; whether it is set.

    Unlike asyncio.wait_for on Python 3.11, which can swallow a cancellation that arrives
    just as the event is set (the loop would then never stop), asyncio.timeout only turns
    its own cancellation into TimeoutError.
    """
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any]], *, recancel_every: float = 0.1, warn_after: float = 5.0
) -> None:
    """Cancel tasks and wait until every one of them has ended.

    One cancellation is not always enough. redis-py sends every command through
    asyncio.wait_for (it has a socket timeout by default), and on Python 3.11 wait_for drops a
    cancellation that arrives as the command completes: the call returns as if nothing had
    happened. A library that turns a cancellation into an error of its own does the same to a
    loop that retries on errors. Either way the loop runs on, and a shutdown waiting for it
    waits for ever. So the tasks still running are cancelled again every `recancel_every`
    seconds until they end, and one still running after `warn_after` seconds is logged with
    where it waits. Their results and errors are discarded, as
    asyncio.gather(return_exceptions=True) would.
    """
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    ended = [task for task in tasks if task.done()]
    started = time.monotonic()
    warned = False
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=recancel_every)
        ended.extend(done)
        if pending and not warned and time.monotonic() - started >= warn_after:
            warned = True
            for task in pending:
                logger.warning(
                    "{task} has not stopped {seconds:.0f} s after it was cancelled; it is at "
                    "{where}",
                    task=task.get_name() if isinstance(task, asyncio.Task) else repr(task),
                    seconds=warn_after,
                    where=_where(task),
                )
    for task in ended:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not report it at exit


def _where(task: asyncio.Future[Any]) -> str:
    """The innermost calls a task is suspended in, innermost last."""
    calls: list[str] = []
    awaited: Any = task.get_coro() if isinstance(task, asyncio.Task) else None
    while awaited is not None:
        code = getattr(awaited, "cr_code", None) or getattr(awaited, "gi_code", None)
        frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
        if code is not None:
            line = frame.f_lineno if frame is not None else "?"
            calls.append(f"{code.co_qualname} ({code.co_filename.rsplit('/', 1)[-1]}:{line})")
        awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
    return " -> ".join(calls[-4:]) or "an unknown place"
