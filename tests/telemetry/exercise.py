"""What the telemetry tests share: a run of every path that handles a secret, the secrets it
used, the log lines of a stack and requests sent in a trace of the test's choosing."""

from __future__ import annotations

import json
import re
import secrets
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from e2e_support import User, create_product, eventually, register, submit_order, wait_terminal
from sinks import WebhookReceiver
from tienda_devstack.stack import Stack

PAYMENT_TOKENS = ("tok_ok", "tok_declined", "tok_timeout")
WRONG_PASSWORD = "wrong-horse-7"
# a secret of each kind, whatever its value: a bare "rt_" would find `start_as_current_span`
# in a stack trace, a bare "eyJ" a page token (base64 JSON) in a URL
SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[A-Za-z0-9\-_.~+/]{8,}"),
    re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),  # JWTs (header.payload...)
    re.compile(r"\brt_[A-Za-z0-9_-]{16,}"),  # refresh tokens
    re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"),  # webhook secrets
    re.compile(r"\btok_[A-Za-z0-9_]+"),  # payment tokens
)


@dataclass(frozen=True)
class Exercised:
    """What `exercise` did: who, with what, and every secret it sent or was given."""

    customer: User
    product_id: str
    order_ids: dict[str, str]  # by payment token
    webhook_id: str
    secrets: tuple[str, ...]

    def secret_in(self, text: str) -> str | None:
        """The first secret (or text shaped like one) found in text, with what surrounds it."""
        for secret in self.secrets:
            if (at := text.find(secret)) >= 0:
                return text[max(0, at - 200) : at + 100]
        for pattern in SECRET_PATTERNS:
            if found := pattern.search(text):
                return text[max(0, found.start() - 200) : found.end() + 100]
        return None


def exercise(
    api: httpx.Client, stack: Stack, admin: User, webhook_receiver: WebhookReceiver
) -> Exercised:
    """Register, log in (and once with a wrong password), refresh (and replay the spent
    refresh token), register a webhook, order with every payment token, and wait until the
    orders ended and their webhooks were delivered and logged."""
    customer = register(api)
    refreshed = api.post("/v1/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert refreshed.status_code == 200, refreshed.text
    replayed = api.post("/v1/auth/refresh", json={"refresh_token": customer.refresh_token})
    assert replayed.status_code == 401, replayed.text
    wrong = api.post("/v1/auth/login", json={"email": customer.email, "password": WRONG_PASSWORD})
    assert wrong.status_code == 401, wrong.text

    path = f"/secrets-{uuid.uuid4().hex}"
    created = api.post(
        "/v1/webhooks",
        headers=customer.headers,
        json={
            "url": f"{webhook_receiver.url}{path}",
            "event_types": ["order.confirmed", "order.cancelled", "order.rejected"],
        },
    )
    assert created.status_code == 200, created.text
    hook = created.json()

    product = create_product(api, admin, stock=len(PAYMENT_TOKENS))
    order_ids = {
        token: submit_order(api, customer, product["id"], payment_token=token)["id"]
        for token in PAYMENT_TOKENS
    }
    for order_id in order_ids.values():
        wait_terminal(api, customer, order_id)
    # one delivery per order, each attempt logged by order_service once it is stored
    webhook_receiver.wait_for(
        lambda seen: sum(r.path == path for r in seen) >= len(order_ids), timeout=30
    )
    eventually(
        lambda: (
            sum(
                doc.get("labels.webhook_id") == hook["id"]
                and str(doc["message"]).startswith("webhook delivery succeeded")
                for doc in log_documents(stack, "order_service")
            )
            >= len(order_ids)
        )
    )

    tokens = refreshed.json()
    used = (
        stack.admin.password,
        stack.service_secret,
        admin.token,
        admin.refresh_token,
        customer.password,
        WRONG_PASSWORD,
        customer.token,
        customer.refresh_token,
        tokens["access_token"],
        tokens["refresh_token"],
        hook["secret"],
        *PAYMENT_TOKENS,
    )
    return Exercised(customer, product["id"], order_ids, hook["id"], used)


def log_lines(stack: Stack, service: str) -> list[str]:
    """Every log line the service wrote so far (not one it is still writing)."""
    text = stack.log_path(service).read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def log_documents(stack: Stack, service: str) -> list[dict[str, Any]]:
    """Every log line the service wrote so far, decoded."""
    return [json.loads(line) for line in log_lines(stack, service)]


def new_traceparent() -> tuple[str, str]:
    """A W3C traceparent of a fresh sampled trace, and that trace's id."""
    trace_id = secrets.token_hex(16)
    return f"00-{trace_id}-{secrets.token_hex(8)}-01", trace_id
