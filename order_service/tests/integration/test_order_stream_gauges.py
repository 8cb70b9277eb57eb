"""order_service exports the pending, lag and dead-letter gauges of every consumer group it
runs: the choreographed saga's and the read model's as well as the notifications'."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tienda_contracts.topology import subscriptions_of
from tienda_platform.messaging import CONSUMER_LAG, CONSUMER_PENDING, DEAD_LETTERS
from tienda_platform.testing import TokenMint

from ..unit.fakes import FakeProductCatalog, wait_until
from .running_order_service import run_order_service

pytestmark = pytest.mark.integration


async def test_every_group_of_the_service_has_its_stream_gauges(
    database_url: str, redis_url: str, token_mint: TokenMint, tmp_path: Path
) -> None:
    for gauge in (CONSUMER_PENDING, CONSUMER_LAG, DEAD_LETTERS):
        gauge.clear()  # only what this service's watch sets counts
    async with run_order_service(
        database_url=database_url,
        redis_url=redis_url,
        mint=token_mint,
        catalog=FakeProductCatalog(),
        saga_mode="choreography",
        scratch=tmp_path,
    ) as running:
        groups = {consumer.group for consumer in running.app.consumers}
        assert {"order_service", "order_read_model", "webhooks"} <= groups
        expected = [s for group in sorted(groups) for s in subscriptions_of(group)]

        def exported() -> bool:
            return all(
                REGISTRY.get_sample_value(name, {"stream": s.stream, "group": s.group}) is not None
                for s in expected
                for name in ("tienda_consumer_pending", "tienda_consumer_lag")
            ) and all(
                REGISTRY.get_sample_value("tienda_dead_letters", {"stream": s.stream}) is not None
                for s in expected
            )

        await wait_until(exported, within=15)
    streams = {s.stream for s in expected}
    assert "tienda.product.events" in streams  # the saga group's stream, not only notifications'
