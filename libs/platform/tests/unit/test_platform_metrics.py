"""Label children looked up once on the hot paths: tienda_platform.metrics.child for the
project's metrics, CachedChildren for FastStream's."""

from __future__ import annotations

import pytest
from faststream.prometheus.types import PublishingStatus
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from tienda_platform.messaging import CachedChildren, prometheus_middleware
from tienda_platform.metrics import child

pytestmark = pytest.mark.unit


def test_a_cached_child_is_the_metrics_own_and_counts_where_labels_would() -> None:
    registry = CollectorRegistry()
    events = Counter("events_total", "Events.", ["stream", "result"], registry=registry)
    handled = child(events, "tienda.order.events", "handled")
    assert handled is events.labels("tienda.order.events", "handled")
    assert child(events, "tienda.order.events", "handled") is handled
    handled.inc()
    child(events, "tienda.order.events", "handled").inc()
    child(events, "tienda.order.events", "failed").inc()
    sample = registry.get_sample_value
    assert sample("events_total", {"stream": "tienda.order.events", "result": "handled"}) == 2
    assert sample("events_total", {"stream": "tienda.order.events", "result": "failed"}) == 1


def test_a_cached_child_refuses_the_wrong_labels_as_labels_does() -> None:
    events = Counter("refusing_total", "Events.", ["stream"], registry=CollectorRegistry())
    with pytest.raises(ValueError, match="Incorrect label count"):
        child(events, "a", "b")


def test_faststreams_metrics_give_each_label_sets_child_once_and_count_as_before() -> None:
    registry = CollectorRegistry()
    received = Counter("received_total", "Received.", ["app_name", "handler"], registry=registry)
    cached = CachedChildren(received)
    first = cached.labels(app_name="order_service", handler="tienda.order.events")
    assert first is received.labels(app_name="order_service", handler="tienda.order.events")
    assert cached.labels(app_name="order_service", handler="tienda.order.events") is first
    first.inc()
    cached.labels(app_name="order_service", handler="tienda.order.events").inc(2)
    labels = {"app_name": "order_service", "handler": "tienda.order.events"}
    assert registry.get_sample_value("received_total", labels) == 3
    assert cached.describe() == received.describe()  # the rest is the metric's own


def test_the_prometheus_middlewares_metrics_are_cached_and_land_in_the_registry() -> None:
    middleware = prometheus_middleware("tienda-test")
    container = middleware._metrics_container
    names = [name for name in type(container).__slots__ if not name.startswith("_")]
    metrics = [getattr(container, name) for name in names]
    assert metrics and all(isinstance(metric, CachedChildren) for metric in metrics)
    labels = {"app_name": "tienda-test", "broker": "redis", "destination": "s", "status": "success"}
    before = REGISTRY.get_sample_value("faststream_published_messages_total", labels) or 0
    manager = middleware._metrics_manager
    for _ in range(2):
        manager.add_published_message(
            broker="redis", destination="s", status=PublishingStatus.success
        )
    assert REGISTRY.get_sample_value("faststream_published_messages_total", labels) == before + 2
