"""Pytest fixtures shared by the services' tests: databases and test access tokens, and the
wait for a condition that they all use.

Loaded as a plugin from the repository's root conftest.py.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.id_generator import IdGenerator
from sqlalchemy.engine import URL, make_url

from tienda_platform.auth import ALGORITHM, JwksKeySource, TokenVerifier

POSTGRES_ENV = "TIENDA_TEST_POSTGRES_URL"
TEST_ISSUER = "tienda-auth"
TEST_AUDIENCE = "tienda"


FIXED_ID_BASE = 0x0193ABCD_0000_7000_8000_000000000000


class CountingIds(IdGenerator):
    """Trace and span ids counted from one: two tracer providers given one each make the same
    ids in the same order, so that tests can compare what two implementations record."""

    def __init__(self) -> None:
        self._next = 0

    def generate_span_id(self) -> int:
        self._next += 1
        return self._next

    def generate_trace_id(self) -> int:
        self._next += 1
        return (7 << 64) + self._next


def comparable_fields(span: ReadableSpan) -> dict[str, Any]:
    """What two implementations of one instrumentation must agree on in a finished span: all
    but its times, its instrumentation scope and an exception's stack trace (which passes
    through different frames)."""
    return {
        "name": span.name,
        "kind": span.kind,
        "context": span.context,
        "parent": span.parent,
        "attributes": dict(span.attributes or {}),
        "status": (span.status.status_code, span.status.description),
        "events": [
            (
                event.name,
                {
                    key: value
                    for key, value in (event.attributes or {}).items()
                    if key != "exception.stacktrace"
                },
            )
            for event in span.events
        ],
        "ended": span.end_time is not None,
    }


def fixed_id(number: int) -> str:
    """A UUIDv7 that is the same on every run (0193abcd-0000-7000-8000-<number>), for test
    parameters: pytest-xdist's workers each collect the tests, and their parameters (so the
    tests' names) must agree."""
    return str(uuid.UUID(int=FIXED_ID_BASE | number))


async def eventually(
    condition: Callable[[], Awaitable[Any] | Any], *, within: float = 20.0, every: float = 0.02
) -> None:
    """Poll condition (plain or async) until it holds; fail the test after `within` seconds.
    The wait of every test that waits on something another task or process does."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"condition not met within {within:g} s"
        await asyncio.sleep(every)


def events_consumed(stream: str, group: str, event_type: str, result: str) -> float:
    """This process's tienda_events_consumed_total for one stream, group, event type and
    result (handled, duplicate, ignored, ...); 0 before the first."""
    from prometheus_client import REGISTRY

    labels = {"stream": stream, "group": group, "event_type": event_type, "result": result}
    return REGISTRY.get_sample_value("tienda_events_consumed_total", labels) or 0.0


def postgres_server_url() -> str | None:
    """The PostgreSQL server for tests, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres."""
    return os.environ.get(POSTGRES_ENV) or None


async def _connect(url: URL, database: str) -> Any:
    """An asyncpg connection to `database` on the server of url."""
    import asyncpg

    return await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=database,
    )


async def create_postgres_database(server_url: str) -> str:
    url = make_url(server_url)
    name = f"tienda_test_{uuid.uuid4().hex[:12]}"
    conn = await _connect(url, url.database or "postgres")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_postgres_database(database_url: str) -> None:
    url = make_url(database_url)
    conn = await _connect(url, "postgres")
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)')
    finally:
        await conn.close()


async def end_connections(database_url: str, *, waiting_on_a_lock: bool = False) -> int:
    """End, as the server would in a restart or a failover, every connection to the
    PostgreSQL database of database_url (only those waiting on a lock, with waiting_on_a_lock);
    how many it ended."""
    url = make_url(database_url)
    conn = await _connect(url, "postgres")
    try:
        ended = await conn.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()"
            " AND (NOT $2 OR (wait_event_type = 'Lock' AND state = 'active'))",
            url.database,
            waiting_on_a_lock,
        )
    finally:
        await conn.close()
    return int(ended or 0)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database: a SQLite file, and a fresh PostgreSQL database when one is configured."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    server = postgres_server_url()
    if server is None:
        pytest.skip(f"{POSTGRES_ENV} is not set; .ci/run sets it")
    url = await create_postgres_database(server)
    try:
        yield url
    finally:
        await drop_postgres_database(url)


@dataclass
class TokenMint:
    """Signs access tokens the way auth_service does, with a key of its own, for tests."""

    private_key: Ed25519PrivateKey
    kid: str

    def jwks(self) -> dict[str, Any]:
        public = jwt.algorithms.OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**public, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}

    def token(self, user_id: str, role: str = "customer", *, ttl: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "sub": user_id,
            "role": role,
            "typ": "access",
            "iss": TEST_ISSUER,
            "aud": TEST_AUDIENCE,
            "iat": now,
            "exp": now + ttl,
            **claims,
        }
        return jwt.encode(payload, self.private_key, algorithm=ALGORITHM, headers={"kid": self.kid})

    def verifier(self) -> TokenVerifier:
        async def fetch() -> dict[str, Any]:
            return self.jwks()

        return TokenVerifier(JwksKeySource(fetch), issuer=TEST_ISSUER, audience=TEST_AUDIENCE)


@pytest.fixture
def token_mint() -> Iterator[TokenMint]:
    yield TokenMint(Ed25519PrivateKey.generate(), kid=f"test-{uuid.uuid4().hex[:8]}")


REDIS_ENV = "TIENDA_TEST_REDIS_URL"


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tienda_platform.redis_server import EmbeddedRedis

    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
async def platform_engine(tmp_path: Path) -> AsyncIterator[Any]:
    """An engine on a new SQLite file with the platform's own tables: the outbox and the
    consumers' processed events."""
    from tienda_platform.database import PLATFORM_METADATA, create_engine

    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'platform.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(PLATFORM_METADATA.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
def recorded_spans() -> Iterator[Any]:
    """The process's tracing as configure_tracing sets it up, recording into an in-memory
    exporter (an InMemorySpanExporter) for the test: the default sampler, every trace kept
    and QuietSampler's noise left out."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from tienda_platform import telemetry

    telemetry.configure_tracing(service_name="svc", service_version="1", environment="test")
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert isinstance(provider.sampler, telemetry.QuietSampler)
    exporter = InMemorySpanExporter()
    recording = provider.sampler.recording
    telemetry.record_spans(SimpleSpanProcessor(exporter))
    try:
        yield exporter
    finally:
        exporter.shutdown()  # it keeps nothing more once the test is done
        provider.sampler.recording = recording


@pytest.fixture(params=["embedded", pytest.param("server", marks=pytest.mark.redis_server)])
async def redis_url(request: pytest.FixtureRequest, embedded_redis: Any) -> AsyncIterator[str]:
    """An empty Redis database: the embedded server, and the machine's Redis when configured."""
    import redis.asyncio as redis

    if request.param == "embedded":
        url = str(embedded_redis.url)
    else:
        url = os.environ.get(REDIS_ENV) or ""
        if not url:
            pytest.skip(f"{REDIS_ENV} is not set; .ci/run sets it")
    client = redis.Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


class HeldAtCommit:
    """Mixin for a service's SQL unit of work (one with a `_session`) that stops before its
    commit, its statements sent, until released: races between replicas' transactions are
    tested by holding one there and starting the other.

        class HeldUnitOfWork(HeldAtCommit, SqlUnitOfWork): ...
    """

    _session: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def commit(self) -> None:
        assert self._session is not None
        await self._session.flush()
        self.reached.set()
        await self.release.wait()
        await super().commit()  # type: ignore[misc]
