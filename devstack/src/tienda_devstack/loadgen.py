"""Closed-loop load generators: N workers each send a request, wait for the answer, repeat.

The HTTP one speaks HTTP/1.1 keep-alive over raw asyncio streams so that the client costs far
less than the server it measures; the gRPC one uses one grpc.aio channel.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"{self.throughput:8.0f} req/s  p50 {self.percentile(0.5) * 1000:6.2f} ms  "
            f"p99 {self.percentile(0.99) * 1000:6.2f} ms  ({self.requests} requests, "
            f"{self.errors} errors)"
        )


async def closed_loop(
    make_worker: Callable[[], Awaitable[Callable[[], Awaitable[bool]]]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.5,
) -> LoadResult:
    """Run `concurrency` workers for `seconds` after a warm-up; each call returns success."""
    latencies: list[float] = []
    errors = 0
    measuring = False
    stop_at = time.perf_counter() + warmup + seconds

    async def worker() -> None:
        nonlocal errors
        call = await make_worker()
        while (now := time.perf_counter()) < stop_at:
            ok = await call()
            if measuring:
                latencies.append(time.perf_counter() - now)
                errors += not ok

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await asyncio.sleep(warmup)
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*tasks)
    return LoadResult(len(latencies), errors, time.perf_counter() - started, latencies)


async def http_get_worker(host: str, port: int, path: str) -> Callable[[], Awaitable[bool]]:
    """A keep-alive connection that GETs `path` and reads the whole response."""
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    async def call() -> bool:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        return status == 200

    return call
