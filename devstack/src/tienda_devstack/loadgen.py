"""Closed-loop load generators: N workers each send a request, wait for the answer, repeat.

The HTTP one speaks HTTP/1.1 keep-alive over raw asyncio streams so that the client costs far
less than the server it measures (HttpConnections does the same for the order benchmark's
POSTs); the gRPC one uses one grpc.aio channel.
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


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """The status and body of one response with a Content-Length, as the gateway sends."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return status, await reader.readexactly(length)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, message: bytes
) -> tuple[int, bytes, float]:
    """Send a request and read its answer (status, body, when it went out); the connection
    is closed if anything goes wrong."""
    try:
        sent = time.perf_counter()
        writer.write(message)
        status, body = await _read_response(reader)
    except BaseException:
        writer.close()
        raise
    return status, body, sent


class HttpConnections:
    """Up to `size` keep-alive HTTP/1.1 connections to one server, one per request at a time.

    Servers close connections left idle (uvicorn after 5 s): one idle longer than
    `idle_seconds` is not used again, and a request that finds its reused connection closed
    before any answer came (the server's close crossed it) goes again on a new one."""

    def __init__(self, host: str, port: int, size: int, idle_seconds: float = 2.0) -> None:
        self._host, self._port = host, port
        self._idle_seconds = idle_seconds
        # (reader, writer, when it was last used), the most recently used last
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._slots = asyncio.Semaphore(size)

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, float]:
        """Send one request (once a connection is free) and read its answer: the status,
        the body and when the request went out (perf_counter)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self._host}:{self._port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        lines.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        async with self._slots:
            reader, writer, reused = await self._take()
            try:
                answer = await _exchange(reader, writer, message)
            except (asyncio.IncompleteReadError, ConnectionError) as error:
                closed_unanswered = not getattr(error, "partial", b"")
                if not (reused and closed_unanswered):
                    raise
                reader, writer = await self._connect()
                answer = await _exchange(reader, writer, message)
            self._idle.append((reader, writer, time.monotonic()))
            return answer

    async def _take(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        while self._idle:
            reader, writer, last_used = self._idle.pop()
            if time.monotonic() - last_used < self._idle_seconds:
                return reader, writer, True
            writer.close()
        return *await self._connect(), False

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self._host, self._port)

    async def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


async def http_get_worker(host: str, port: int, path: str) -> Callable[[], Awaitable[bool]]:
    """A keep-alive connection that GETs `path` and reads the whole response."""
    reader, writer = await asyncio.open_connection(host, port)
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()

    async def call() -> bool:
        writer.write(request)
        status, _ = await _read_response(reader)
        return status == 200

    return call
