"""Channels between services: retries on UNAVAILABLE, keepalive, and the caller's bearer token."""

from __future__ import annotations

import json

import grpc

from tienda_platform import telemetry

_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [{}],
                "retryPolicy": {
                    "maxAttempts": 4,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "1s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


def create_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel (TLS terminates at the mesh or the gateway) with transparent
    retries of calls that never reached a server."""
    return grpc.aio.insecure_channel(
        target,
        interceptors=telemetry.client_interceptors(),
        options=[
            ("grpc.service_config", _SERVICE_CONFIG),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that forwards a bearer token."""
    return (("authorization", f"Bearer {token}"),)
