"""One order gives one trace, from the gateway through both services and across Redis."""

from __future__ import annotations

import httpx
import pytest
from e2e_support import User, create_product, submit_order, wait_terminal
from tienda_devstack.otlp_receiver import OtlpReceiver, ReceivedSpan
from tienda_devstack.stack import Stack

pytestmark = pytest.mark.e2e

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


def test_an_order_is_one_trace_across_services_and_the_event_hop(
    api: httpx.Client, admin: User, customer: User, otlp_receiver: OtlpReceiver, stack: Stack
) -> None:
    product = create_product(api, admin, stock=3)
    order_id = submit_order(api, customer, product["id"])["id"]
    wait_terminal(api, customer, order_id)

    def redis_call(span: ReceivedSpan) -> bool:
        return span.kind == CLIENT and span.attributes.get("db.system") == "redis"

    def order_trace(spans: list[ReceivedSpan]) -> str | None:
        for span in spans:
            if (
                span.service == "gateway"
                and span.kind == SERVER
                and (
                    span.attributes.get("order.id") == order_id
                    or "/v1/orders" in str(span.attributes.get("http.target", ""))
                    or "/v1/orders" in str(span.attributes.get("url.path", ""))
                )
            ):
                traced = [s for s in spans if s.trace_id == span.trace_id]
                if any(s.attributes.get("order.id") == order_id for s in traced):
                    return span.trace_id
        return None

    def complete(spans: list[ReceivedSpan]) -> bool:
        trace_id = order_trace(spans)
        if trace_id is None:
            return False
        services = {s.service for s in spans if s.trace_id == trace_id}
        consumed = [s for s in spans if s.trace_id == trace_id and s.kind == CONSUMER]
        names = {s.name for s in spans if s.trace_id == trace_id}
        return (
            {"gateway", "order_service", "product_service"} <= services
            and bool(consumed)
            and {"saga pay", "email send"} <= names
            and any(redis_call(s) for s in spans if s.trace_id == trace_id)
        )

    spans = otlp_receiver.wait_for(complete, timeout=30)
    trace_id = order_trace(spans)
    trace = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in trace}
    # the Redis hop: a consumer span whose parent is a producer span of the same trace
    hops = [
        s
        for s in trace
        if s.kind == CONSUMER
        and by_id.get(s.parent_span_id)
        and by_id[s.parent_span_id].kind == PRODUCER
    ]
    assert hops, [(s.service, s.name, s.kind) for s in trace]
    # the relay's round trip to Redis (its pipelined XADDs), under the relay span of an event
    # of the order; other Redis calls may join the trace too, e.g. the attempt counter of a
    # handler retried because its group heard of the order before the customer
    relayed = [s for s in trace if redis_call(s) and s.name.startswith("XADD")]
    assert relayed and all(
        by_id[s.parent_span_id].name.startswith("outbox relay ") for s in relayed
    ), [(s.name, by_id.get(s.parent_span_id)) for s in relayed]
    # gRPC: a server span of product_service under a client span of order_service
    assert any(
        s.service == "product_service"
        and s.kind == SERVER
        and by_id.get(s.parent_span_id) is not None
        and by_id[s.parent_span_id].kind == CLIENT
        for s in trace
    )
    # deferred work joins the trace: the saga's steps (and, under them, the calls to
    # product_service and the payment), and the email about the confirmed order
    steps = [s for s in trace if s.name.startswith("saga ")]
    assert all(s.attributes.get("order.id") == order_id for s in steps)
    if stack.env["ORDER_SAGA_MODE"] == "orchestration":
        assert any(
            s.service == "product_service" and s.name.endswith("/ReserveStock") for s in trace
        )
    # every span has exactly one root: the gateway's request
    roots = [s for s in trace if not s.parent_span_id]
    assert [r.service for r in roots] == ["gateway"]


def test_spans_carry_resource_attributes_and_no_secrets(otlp_receiver: OtlpReceiver) -> None:
    spans = otlp_receiver.wait_for(lambda s: len(s) > 0)
    services = {r.get("service.name") for r in otlp_receiver.resources}
    assert {"gateway", "auth_service", "product_service", "order_service"} <= services
    assert all(
        r.get("service.version") and r.get("deployment.environment") == "test"
        for r in otlp_receiver.resources
    )
    for span in spans:
        text = repr(span.attributes)
        # values, not names: a column called password_hash in a SQL statement is no secret
        for secret in ("tok_ok", "tok_declined", "tok_timeout", "Bearer ", "correct-horse-9"):
            assert secret not in text, (span.service, span.name, text[:300])
