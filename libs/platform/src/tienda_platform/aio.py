"""asyncio helpers the background loops share."""

from __future__ import annotations

import asyncio
import contextlib


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
