"""`make bench`: figures of one run on this machine, each against a baseline of the same run.

- start-up: seconds from launching the stack to all services ready (first and second start)
- memory: resident memory of the whole stack after start-up
- GET /v1/products/{id} through the gateway versus GetProduct over gRPC directly, same
  concurrency; the gateway should keep at least 50% of the direct throughput
- events: outbox insert to consumer commit, versus raw XADD + XREADGROUP/XACK (target >= 0.15)
- orders: completed orders per second through REST until terminal, and the time to the
  terminal state at 100 orders/s, at half the rate reached and at 5/s, in both saga modes,
  on SQLite and (with TIENDA_BENCH_POSTGRES_URL) on PostgreSQL (targets 200 orders/s,
  p99 < 250 ms at 100/s)
- metrics and tracing: order throughput with metrics only, with metrics and every trace, and
  with metrics and one trace in ten exported over OTLP (to a receiver in a process of its
  own, as a collector is), versus METRICS_ENABLED=false with OTEL_SDK_DISABLED=true, same
  run, bursts taken in turn (target: keeps >= 85% with every trace); and every trace without
  the spans of SQL statements and Redis commands, to show what those take
- hot paths: CPU per span to start and end a span, for a `with start_as_current_span`
  block, and to start and end a span in a trace that is not kept (one trace in ten kept),
  with tienda_platform.spans versus the SDK's tracer provider; CPU per request of the
  gateway's server span (gateway.tracing.ServerSpans versus OpenTelemetry's ASGI
  middleware) and per call of a service's (tienda_platform.grpc_spans.ServerCallSpans
  versus the gRPC instrumentation's aio server interceptor); CPU per span of
  tienda_platform.otlp's encoding versus the SDK's encoder; per access-token check of a
  token seen before (cached) versus a full check; and per greenlet that SQLAlchemy's asyncio
  layer starts for an awaited database call, with tienda_platform.stackcache versus without
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa
from product.v1 import product_pb2, product_pb2_grpc
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine
from tienda_platform.redis_server import EmbeddedRedis

from tienda_devstack.bench_events import EVENTS, pipeline_rate, raw_redis_rate
from tienda_devstack.bench_hot_paths import (
    current_span_us,
    greenlet_spawn_us,
    grpc_server_span_us,
    server_span_us,
    span_encoding_us,
    span_recording_us,
    token_check_us,
    unkept_span_us,
)
from tienda_devstack.bench_orders import OrderRun, run_orders
from tienda_devstack.loadgen import LoadResult, closed_loop, http_get_worker
from tienda_devstack.otlp_receiver import OtlpReceiver, SpanCountingReceiver
from tienda_devstack.stack import Ports, Stack, cpu_seconds, resident_memory_bytes

CONCURRENCY = 16
SECONDS = 5.0
ORDERS = 300
# a burst of the same stack can run a quarter faster or slower than the one before it (the
# machine's speed drifts), so the tracing figures are means over many rounds
TRACING_ROUNDS = 20
TRACING_ORDERS = 100
# and stacks of the same settings differ by a few per cent for as long as they run (their
# processes' memory layout and hash seeds, their files): each setting's rounds are shared by
# this many stacks, started one after the other
TRACING_STACKS = 2


def admin_token(stack: Stack) -> str:
    response = httpx.post(
        f"{stack.gateway_url}/v1/auth/login",
        json={"email": stack.admin.email, "password": stack.admin.password},
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


def create_product(stack: Stack, token: str, stock: int = 1000) -> str:
    response = httpx.post(
        f"{stack.gateway_url}/v1/products",
        headers={"Authorization": f"Bearer {token}"},
        json={
            "sku": f"BENCH-{time.time_ns()}",
            "name": "Bench mug",
            "price_cents": 1000,
            "stock": stock,
        },
        timeout=10,
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def grpc_get_product(target: str, product_id: str) -> LoadResult:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = product_pb2_grpc.ProductServiceStub(channel)
        request = product_pb2.GetProductRequest(id=product_id)

        async def make_worker():
            async def call() -> bool:
                await stub.GetProduct(request)
                return True

            return call

        return await closed_loop(make_worker, concurrency=CONCURRENCY, seconds=SECONDS)


async def gateway_get_product(port: int, product_id: str) -> LoadResult:
    async def make_worker():
        return await http_get_worker("127.0.0.1", port, f"/v1/products/{product_id}")

    return await closed_loop(make_worker, concurrency=CONCURRENCY, seconds=SECONDS)


def timed_start(
    data_dir: Path, ports: Ports, env: dict[str, str] | None = None
) -> tuple[Stack, float]:
    stack = Stack(data_dir=data_dir, ports=ports, env=env or {})
    started = time.monotonic()
    stack.start()
    stack.wait_ready(timeout=60)
    return stack, time.monotonic() - started


def section_startup_and_gateway(tmp: Path) -> None:
    ports = Ports.free()
    first, first_start = timed_start(tmp, ports)
    first.stop()
    stack, second_start = timed_start(tmp, ports)
    try:
        rss, pss = resident_memory_bytes(stack.pids())
        print(f"start-up, empty data folder     {first_start:6.2f} s   (target < 5 s)")
        print(f"start-up, existing data         {second_start:6.2f} s   (target < 5 s)")
        print(
            f"resident memory after start-up  {pss / 2**20:6.0f} MB PSS, {rss / 2**20:.0f} MB RSS"
            f"  (target < 400 MB, {len(stack.pids())} processes incl. Redis)"
        )
        product_id = create_product(stack, admin_token(stack))
        print(f"\nGetProduct, {CONCURRENCY} concurrent clients, {SECONDS:.0f} s each:")
        direct = asyncio.run(grpc_get_product(f"127.0.0.1:{ports.product}", product_id))
        print(f"  gRPC direct              {direct.summary()}")
        gateway = asyncio.run(gateway_get_product(ports.gateway, product_id))
        print(f"  REST through the gateway {gateway.summary()}")
        ratio = gateway.throughput / direct.throughput
        print(f"  gateway / direct throughput ratio {ratio:.2f}  (target >= 0.50)")
    finally:
        stack.stop()


def section_events(tmp: Path, repeats: int = 3) -> None:
    """On a Redis of its own (the stack's services would consume the bench's events too).
    Each rate is measured `repeats` times, interleaved, and its median printed: one pass
    takes well under a second, which one stall of the machine can halve."""
    print(
        f"\nevents, {EVENTS} user.registered, one consumer, embedded Redis (median of {repeats}):"
    )
    with EmbeddedRedis(tmp / "events-redis") as server:
        databases = [("SQLite", "")]
        if postgres := os.environ.get("TIENDA_BENCH_POSTGRES_URL", ""):
            databases.append(("PostgreSQL", postgres))
        raws: list[float] = []
        ours: dict[str, list[float]] = {name: [] for name, _ in databases}
        for _ in range(repeats):
            raws.append(asyncio.run(raw_redis_rate(server.url)))
            for name, url in databases:
                ours[name].append(asyncio.run(pipeline_rate(server.url, tmp, database_url=url)))
        raw = statistics.median(raws)
        print(f"  raw redis-py XADD + XREADGROUP/XACK   {raw:8.0f} entries/s")
        for name, rates in ours.items():
            rate = statistics.median(rates)
            print(
                f"  outbox -> relay -> consumer commit, {name:<10} {rate:6.0f} events/s"
                f"  ratio {rate / raw:.3f}  (target >= 0.15)"
            )


def max_order_run(
    stack: Stack,
    token: str,
    product_id: str,
    count: int,
    settled: Callable[[], None] = lambda: None,
) -> tuple[OrderRun, dict[str, float]]:
    """Orders placed as fast as 32 clients can, and each process's CPU per order (ms),
    counted until `settled` returns (the orders' trailing work done)."""
    pids = {name: process.pid for name, process in stack.processes.items()}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    run = asyncio.run(run_orders(stack, token=token, product_id=product_id, count=count, rate=None))
    settled()
    cpu_per_order = {
        name: (cpu_seconds(pid) - cpu_before[name]) * 1000 / count for name, pid in pids.items()
    }
    return run, cpu_per_order


def quiet(stack: Stack, timeout: float = 60.0) -> None:
    """Wait until the services are idle (under a tenth of a core over half a second): an
    order is terminal before its trailing work (emails, webhooks, read model) is done, and a
    run that started on top of the last one's would measure both."""
    pids = [process.pid for process in stack.processes.values()]
    deadline = time.monotonic() + timeout
    before = sum(cpu_seconds(pid) for pid in pids)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(pid) for pid in pids)
        if now - before < 0.05:
            return
        before = now


def warmed_up(stack: Stack, warm_up: int) -> tuple[str, str]:
    """An admin token and a product with ample stock, after warm_up orders of it."""
    token = admin_token(stack)
    product_id = create_product(stack, token, stock=1_000_000)
    asyncio.run(run_orders(stack, token=token, product_id=product_id, count=warm_up, rate=None))
    return token, product_id


def order_figures(stack: Stack, label: str) -> float:
    token, product_id = warmed_up(stack, 50)
    quiet(stack)
    # each run starts on idle services; the max run's CPU includes its orders' trailing work
    peak, cpu_per_order = max_order_run(
        stack, token, product_id, ORDERS, settled=lambda: quiet(stack)
    )
    paced = asyncio.run(
        run_orders(stack, token=token, product_id=product_id, count=ORDERS, rate=100)
    )
    quiet(stack)
    # within this machine's capacity: half of what it reached, and a light load, where the
    # time to terminal is the orders' own and not a queue's (100 orders: a p99 that is not
    # simply the slowest)
    half = round(peak.throughput / 2)
    sustained = asyncio.run(
        run_orders(stack, token=token, product_id=product_id, count=ORDERS, rate=half)
    )
    quiet(stack)
    light = asyncio.run(run_orders(stack, token=token, product_id=product_id, count=100, rate=5))
    print(f"  {label:<34} max {peak.summary()}")
    print(f"  {label:<34} at 100/s {paced.summary()}")
    print(f"  {label:<34} at {half}/s {sustained.summary()}")
    print(f"  {label:<34} at 5/s {light.summary()}")
    print(
        f"  {label:<34} CPU per order in the max run: "
        + ", ".join(f"{name} {ms:.0f} ms" for name, ms in cpu_per_order.items())
    )
    return peak.throughput


def section_orders(tmp: Path) -> None:
    """On SQLite (as `make run`), and on PostgreSQL (as docker compose) when
    TIENDA_BENCH_POSTGRES_URL names a server to create the services' databases on."""
    print("\norders through REST until terminal (tok_ok), 32 concurrent clients:")
    postgres = os.environ.get("TIENDA_BENCH_POSTGRES_URL", "")
    for database in ["SQLite"] + (["PostgreSQL"] if postgres else []):
        for mode in ("orchestration", "choreography"):
            env = {"ORDER_SAGA_MODE": mode}
            if database == "PostgreSQL":
                env |= asyncio.run(fresh_service_databases(postgres))
            stack, _ = timed_start(tmp / f"{database}-{mode}", Ports.free(), env)
            try:
                order_figures(stack, f"{mode}, {database}")
            finally:
                stack.stop()
    print("  (targets: >= 200 orders/s; p99 < 250 ms at 100 orders/s)")


async def fresh_service_databases(url: str) -> dict[str, str]:
    """Empty databases `<name>_auth`, `<name>_product` and `<name>_order` on the server of
    url (whose database is <name>), as the services' *_DATABASE_URL variables."""
    server = make_url(url)
    engine = create_async_engine(server, isolation_level="AUTOCOMMIT")
    env = {}
    try:
        async with engine.connect() as connection:
            for service in ("auth", "product", "order"):
                name = f"{server.database}_{service}"
                await connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                await connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
                env[f"{service.upper()}_DATABASE_URL"] = server.set(database=name).render_as_string(
                    hide_password=False
                )
    finally:
        await engine.dispose()
    return env


def section_tracing(tmp: Path) -> None:
    """Five stacks side by side: metrics and traces off (METRICS_ENABLED=false,
    OTEL_SDK_DISABLED=true), metrics only, metrics with every trace exported over OTLP,
    metrics with one trace in ten (parentbased_traceidratio 0.1, as production would run), and
    metrics with every trace but without the spans of SQL statements and Redis commands
    (OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=sqlalchemy,redis). Bursts of orders go to each in
    turn while the others idle, in an order that rotates each round, so a drift of the
    machine's speed weighs on all five alike; halfway, five new stacks take over
    (TRACING_STACKS). A burst's CPU is counted until its trailing work is done and its last
    span has reached the receiver, a process of its own (SpanCountingReceiver), whose CPU is
    printed apart."""
    print(
        f"\nmetrics and tracing versus both off, orchestration, {TRACING_ROUNDS} rounds of"
        f" {TRACING_ORDERS} orders per setting, on {TRACING_STACKS} stacks of each in turn:"
    )
    receiver = SpanCountingReceiver()
    exporting = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        # spans leave within half a second, so that each burst's export is counted with it
        "OTEL_BSP_SCHEDULE_DELAY": "500",
    }
    environments = {
        "both off": {"OTEL_SDK_DISABLED": "true", "METRICS_ENABLED": "false"},
        "metrics only": {"OTEL_SDK_DISABLED": "true"},
        "metrics, every trace": exporting,
        "metrics, 1 trace in 10": {
            **exporting,
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
        },
        # what the spans of SQL statements and Redis commands (about half of an order's)
        # take of every trace's cost
        "metrics, every trace, no SQL/Redis": {
            **exporting,
            "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "sqlalchemy,redis",
        },
    }
    labels = list(environments)
    exported = [
        label for label, env in environments.items() if "OTEL_EXPORTER_OTLP_ENDPOINT" in env
    ]
    throughput: dict[str, list[float]] = {label: [] for label in labels}
    cpu: dict[str, list[float]] = {label: [] for label in labels}
    try:
        for part, its_rounds in enumerate(tracing_schedule(labels, TRACING_ROUNDS, TRACING_STACKS)):
            with _started_stacks(tmp / f"tracing-{part}", environments) as stacks:
                # a first burst each, not counted: the first hundred orders of a stack run
                # slower
                ready = {label: warmed_up(stack, TRACING_ORDERS) for label, stack in stacks.items()}
                _spans_settled(receiver)
                for stack in stacks.values():
                    quiet(stack)
                for round_, order in its_rounds:
                    for label in order:
                        run, per_order, receiving = _tracing_burst(
                            stacks[label], ready[label], receiver
                        )
                        throughput[label].append(run.throughput)
                        cpu[label].append(per_order)
                        print(
                            f"  round {round_ + 1:<2}  {label:<34} {run.throughput:6.1f} orders/s"
                            f"  CPU per order {per_order:5.0f} ms (the services)"
                            + (f", {receiving:3.1f} ms (the receiver)" if label in exported else "")
                        )
    finally:
        receiver.stop()
    off = statistics.fmean(throughput[labels[0]])
    off_cpu = statistics.fmean(cpu[labels[0]])
    for label in labels[1:]:
        on = statistics.fmean(throughput[label])
        low, high = round_ratio_interval(throughput[label], throughput[labels[0]])
        print(
            f"  kept with {label:<34} {on / off:4.0%} (mean {on:.1f} of {off:.1f} orders/s;"
            f" each round against its own: {low:.0%} to {high:.0%} at 95%;"
            f" CPU per order {statistics.fmean(cpu[label]) / off_cpu:.2f} x)"
        )
    print(f"  (target >= 85% with metrics and tracing on; {receiver.span_count()} spans received)")


@contextmanager
def _started_stacks(
    directory: Path, environments: dict[str, dict[str, str]]
) -> Iterator[dict[str, Stack]]:
    """A stack for each setting, started side by side; all stopped on leaving."""
    stacks: dict[str, Stack] = {}
    try:
        for number, (label, env) in enumerate(environments.items()):
            stacks[label], _ = timed_start(directory / str(number), Ports.free(), env)
        yield stacks
    finally:
        for stack in stacks.values():
            stack.stop()


def _tracing_burst(
    stack: Stack, ready: tuple[str, str], receiver: SpanCountingReceiver
) -> tuple[OrderRun, float, float]:
    """One burst of TRACING_ORDERS orders: the run, the services' CPU per order (ms) and the
    receiver's, counted until the burst's trailing work is done and its spans have arrived."""

    def settled() -> None:
        quiet(stack)
        _spans_settled(receiver)

    received_before = receiver.cpu_seconds()
    run, cpu_by_process = max_order_run(stack, *ready, TRACING_ORDERS, settled=settled)
    receiving = (receiver.cpu_seconds() - received_before) * 1000 / TRACING_ORDERS
    return run, sum(cpu_by_process.values()), receiving


def tracing_schedule(
    labels: list[str], rounds: int, stacks: int
) -> list[list[tuple[int, list[str]]]]:
    """For each set of stacks in turn, its rounds: each round's number and the order its
    bursts go in, which rotates by one each round (over all the rounds, each setting is as
    often first as it is last)."""
    each = rounds // stacks
    return [
        [
            (round_, labels[round_ % len(labels) :] + labels[: round_ % len(labels)])
            for round_ in range(part * each, (part + 1) * each)
        ]
        for part in range(stacks)
    ]


def round_ratio_interval(on: list[float], off: list[float]) -> tuple[float, float]:
    """The 95% confidence interval of the mean of the per-round ratios on[i] / off[i] (a
    normal approximation): how far the machine's drift from round to round leaves the
    figure uncertain."""
    ratios = [a / b for a, b in zip(on, off, strict=True)]
    mean = statistics.fmean(ratios)
    if len(ratios) < 2:
        return mean, mean
    half = 1.96 * statistics.stdev(ratios) / len(ratios) ** 0.5
    return mean - half, mean + half


def _spans_settled(
    receiver: OtlpReceiver | SpanCountingReceiver, quiet: float = 1.0, timeout: float = 60.0
) -> None:
    """Wait until no span has arrived for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    count, since = receiver.span_count(), time.monotonic()
    while time.monotonic() - since < quiet and time.monotonic() < deadline:
        time.sleep(0.1)
        if (now := receiver.span_count()) != count:
            count, since = now, time.monotonic()


def section_hot_paths() -> None:
    print("\nhot paths, CPU per call, against what each replaced:")
    sdk, ours = span_recording_us()
    print(
        f"  span start and end    SDK provider{sdk:6.1f} us/span   tienda_platform.spans"
        f"{ours:6.1f} us/span   ratio {ours / sdk:.2f}"
    )
    sdk, ours = current_span_us()
    print(
        f"  current span (with)   SDK provider{sdk:6.1f} us/span   tienda_platform.spans"
        f"{ours:6.1f} us/span   ratio {ours / sdk:.2f}"
    )
    sdk, ours = unkept_span_us()
    print(
        f"  span in unkept trace  SDK provider{sdk:6.1f} us/span   tienda_platform.spans"
        f"{ours:6.1f} us/span   ratio {ours / sdk:.2f}"
    )
    asgi, ours = server_span_us()
    print(
        f"  gateway server span   ASGI instr. {asgi:6.1f} us/request ServerSpans"
        f"          {ours:6.1f} us/request ratio {ours / asgi:.2f}"
    )
    instrumentation, ours = grpc_server_span_us()
    print(
        f"  gRPC server span      instr.      {instrumentation:6.1f} us/call    ServerCallSpans"
        f"      {ours:6.1f} us/call    ratio {ours / instrumentation:.2f}"
    )
    sdk, ours = span_encoding_us()
    print(
        f"  OTLP span encoding    SDK encoder {sdk:6.1f} us/span   tienda_platform.otlp"
        f" {ours:6.1f} us/span   ratio {ours / sdk:.2f}"
    )
    full, cached = token_check_us()
    print(
        f"  access-token check    full check  {full:6.1f} us       cached token        "
        f" {cached:6.1f} us        ratio {cached / full:.3f}"
    )
    plain, cached = greenlet_spawn_us(cached=False), greenlet_spawn_us(cached=True)
    print(
        f"  greenlet per awaited database call: without stackcache {plain:5.1f} us"
        f"   with tienda_platform.stackcache {cached:5.1f} us   ratio {cached / plain:.2f}"
    )


def machine_reference() -> float:
    """Milliseconds this machine takes for a fixed piece of pure Python: figures of runs on
    different machines (or one machine on a busy day) compare once divided by it."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        sum(range(1_000_000))
        best = min(best, time.perf_counter() - started)
    return best * 1000


def main() -> int:
    print(__doc__)
    print(
        f"machine reference: sum(range(10**6)) takes {machine_reference():.1f} ms here"
        " (lower means a faster core)\n"
    )
    with tempfile.TemporaryDirectory(prefix="tienda-bench-") as tmp:
        section_startup_and_gateway(Path(tmp))
        section_events(Path(tmp))
        section_orders(Path(tmp))
        section_tracing(Path(tmp))
    section_hot_paths()
    return 0
