"""tienda_platform.metrics: the switch, and the cached label children of the hot paths."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter
from tienda_platform.metrics import child, metrics_enabled

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


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("false", False), ("off", False)])
def test_metrics_are_on_unless_turned_off(
    monkeypatch: pytest.MonkeyPatch, value: str | None, enabled: bool
) -> None:
    if value is None:
        monkeypatch.delenv("METRICS_ENABLED", raising=False)
    else:
        monkeypatch.setenv("METRICS_ENABLED", value)
    assert metrics_enabled() is enabled
