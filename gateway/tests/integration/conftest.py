"""The gateway app in-process against fake upstreams on real gRPC servers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from gateway.app import create_app
from gateway.config import Settings
from loguru import logger
from starlette.applications import Starlette
from tienda_platform.logging import ecs_document

from .upstream_fakes import Upstream, gateway_settings, start_all


@pytest.fixture
async def upstreams() -> AsyncIterator[dict[str, Upstream]]:
    started = await start_all()
    yield started
    for upstream in started.values():
        await upstream.server.stop(None)


@pytest.fixture
def settings(upstreams: dict[str, Upstream]) -> Settings:
    return gateway_settings(upstreams, gateway_max_body_bytes=64 * 1024)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings=settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield http


@pytest.fixture
def log_records() -> Iterator[list[dict[str, Any]]]:
    """ECS documents of everything logged during the test."""
    records: list[dict[str, Any]] = []
    sink = logger.add(lambda message: records.append(ecs_document(message.record)))
    yield records
    logger.remove(sink)
