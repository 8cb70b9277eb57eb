"""A background loop that works off due rows: at once when woken, else every `idle` seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from loguru import logger
from tienda_platform.aio import wait_for_event


class PollingLoop:
    """Runs `step` (which returns how many rows it handled) until cancelled.

    A full batch runs the next step at once; errors (the database being away, say) are
    logged and retried with a growing pause, so the loop itself never dies.
    """

    def __init__(
        self,
        step: Callable[[], Awaitable[int]],
        *,
        name: str,
        batch_size: int,
        idle_seconds: float,
        max_pause_seconds: float = 30.0,
    ) -> None:
        self._step = step
        self._name = name
        self._batch_size = batch_size
        self._idle = idle_seconds
        self._max_pause = max_pause_seconds
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something became due: look now instead of at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        pause = self._idle
        while True:
            self._wake.clear()
            try:
                handled = await self._step()
            except Exception as error:
                logger.opt(exception=error).warning("{name} failed a round", name=self._name)
                pause = min(pause * 2, self._max_pause)
                await asyncio.sleep(pause)
                continue
            pause = self._idle
            if handled < self._batch_size:
                await wait_for_event(self._wake, self._idle)
