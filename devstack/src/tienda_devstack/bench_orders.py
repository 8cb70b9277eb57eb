"""Orders through REST until their terminal state, in each saga mode.

Terminal times come from the order events on Redis Streams (XREAD by the benchmark, no
polling load on the services)."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis.asyncio as redis
from events.v1 import events_pb2
from faststream.redis.parser import BinaryMessageFormatV1
from tienda_contracts.topology import ORDER_EVENTS
from tienda_platform.events import EventEnvelope

from tienda_devstack.loadgen import HttpConnections
from tienda_devstack.stack import Stack

TERMINAL_EVENTS = {"order.confirmed", "order.cancelled", "order.rejected"}


@dataclass(frozen=True)
class OrderRun:
    orders: int
    seconds: float
    latencies: list[float]
    refused: dict[int, int]  # HTTP status of a POST /v1/orders that did not create an order
    unfinished: int  # created, but no terminal state within a minute of the last POST

    @property
    def throughput(self) -> float:
        return self.orders / self.seconds

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")

    def summary(self) -> str:
        return (
            f"{self.throughput:7.1f} orders/s  time to terminal p50 "
            f"{self.percentile(0.5) * 1000:7.1f} ms  p99 {self.percentile(0.99) * 1000:7.1f} ms"
            f"  ({self.orders} orders, {self.unfinished} unfinished, {self.refused_text()})"
        )

    def refused_text(self) -> str:
        if not self.refused:
            return "0 refused"
        codes = ", ".join(f"{n} x {code}" for code, n in sorted(self.refused.items()))
        return f"{sum(self.refused.values())} refused: {codes}"


async def _terminal_times(url: str, done: dict[str, float], stop: asyncio.Event) -> None:
    client = redis.Redis.from_url(url)
    last = "$"
    while not stop.is_set():
        reply: Any = await client.xread({ORDER_EVENTS: last}, block=100, count=500)
        now = time.perf_counter()
        for _, entries in reply:
            for entry_id, fields in entries:
                last = entry_id
                body, _ = BinaryMessageFormatV1.parse(fields[b"__data__"])
                envelope = EventEnvelope.FromString(body)
                if envelope.type in TERMINAL_EVENTS:
                    payload = events_pb2.OrderStatusChanged()
                    envelope.data.Unpack(payload)
                    done.setdefault(payload.order_id, now)
    await client.aclose()


async def run_orders(
    stack: Stack,
    *,
    token: str,
    product_id: str,
    count: int,
    rate: float | None,
    concurrency: int = 32,
) -> OrderRun:
    """Place `count` orders (at `rate` per second, or as fast as `concurrency` allows)."""
    done: dict[str, float] = {}
    started_at: dict[str, float] = {}
    stop = asyncio.Event()
    watcher = asyncio.create_task(_terminal_times(stack.redis_url, done, stop))
    await asyncio.sleep(0.2)
    body = json.dumps(
        {"items": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_ok"}
    ).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    refused: dict[int, int] = {}
    url = httpx.URL(stack.gateway_url)
    assert url.port is not None
    connections = HttpConnections(url.host, url.port, concurrency)

    async def place() -> None:
        status, answer, sent = await connections.request("POST", "/v1/orders", body, headers)
        if status != 200:
            refused[status] = refused.get(status, 0) + 1
            return
        started_at[json.loads(answer)["id"]] = sent

    begin = time.perf_counter()
    tasks = []
    for i in range(count):
        if rate:
            await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(place()))
    try:
        await asyncio.gather(*tasks)
    finally:
        await connections.close()
    deadline = time.perf_counter() + 60
    while len(set(started_at) & set(done)) < len(started_at) and time.perf_counter() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    finished = max((done[o] for o in started_at if o in done), default=begin)
    stop.set()
    await watcher
    latencies = [done[o] - started_at[o] for o in started_at if o in done]
    unfinished = len(started_at) - len(latencies)
    return OrderRun(len(latencies), finished - begin, latencies, refused, unfinished)
