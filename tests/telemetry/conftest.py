"""Fixtures of the telemetry tests: a webhook endpoint, and every secret path run once per
stack (see exercise.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from e2e_support import User
from sinks import WebhookReceiver
from tienda_devstack.stack import Stack

from .exercise import Exercised, exercise


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def exercised(
    api: httpx.Client, stack: Stack, admin: User, webhook_receiver: WebhookReceiver
) -> Exercised:
    """Every path that handles a secret, run once on the stack before its logs and spans are
    searched for those secrets, whichever tests ran before."""
    return exercise(api, stack, admin, webhook_receiver)
