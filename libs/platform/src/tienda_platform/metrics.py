"""Whether this process records Prometheus metrics: `METRICS_ENABLED`, true unless set to
false.

Off, a process serves no metrics endpoint and leaves out what records metrics on every
request and every event: the gRPC server and client interceptors, the gateway's request
metrics, FastStream's Prometheus middleware, and the polling behind the stream and outbox
gauges. Counters the code increments directly (events consumed, saga outcomes) still count in
memory, which costs a few microseconds an event. It is there so that `make bench` can weigh
what metrics (and traces, with OTEL_SDK_DISABLED) cost against a process without them, and
for a deployment that scrapes nothing.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Any

_OFF = {"false", "0", "no", "off"}


def metrics_enabled() -> bool:
    return os.environ.get("METRICS_ENABLED", "true").strip().lower() not in _OFF


@lru_cache(maxsize=4096)
def child(metric: Any, *labels: str, **named: str) -> Any:
    """metric.labels(*labels, **named), looked up once per label set: prometheus_client's
    labels() checks and joins the values at every call (a dozen Python calls), and these are
    made for every event and every RPC. The label sets are few and bounded, as Prometheus
    wants them; the cache holds them for the life of the process, as the metric does."""
    return metric.labels(*labels, **named)
