"""Prometheus metrics of the gateway: HTTP server RED metrics (its gRPC client metrics are
the channels', tienda_platform.grpc_client).

Label values are bounded: the route label is a path template (or "unmatched"), the method
label one of the known HTTP methods (or "OTHER"). Label children are cached because a
labels() lookup per request shows in the gateway's throughput.
"""

from __future__ import annotations

from functools import lru_cache

from prometheus_client import Counter, Histogram

UNMATCHED_ROUTE = "unmatched"
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HTTP_REQUESTS = Counter(
    "http_server_requests_total",
    "HTTP requests answered, by method, route template and status code.",
    ["method", "route", "status_code"],
)
HTTP_SECONDS = Histogram(
    "http_server_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=_BUCKETS,
)


def bounded_method(method: str) -> str:
    return method if method in _KNOWN_METHODS else "OTHER"


@lru_cache(maxsize=4096)
def http_requests(method: str, route: str, status_code: int) -> Counter:
    return HTTP_REQUESTS.labels(method, route, str(status_code))


@lru_cache(maxsize=1024)
def http_seconds(method: str, route: str) -> Histogram:
    return HTTP_SECONDS.labels(method, route)
