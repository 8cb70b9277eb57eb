"""One order gives one trace, from the gateway through both services and across Redis, down
to its SQL statements, its webhook deliveries and its emails; spans carry the business ids,
and no secret, in their attributes, events or status."""

from __future__ import annotations

import uuid

import httpx
import pytest
from e2e_support import User, create_product, submit_order, wait_terminal
from sinks import WebhookReceiver
from tienda_devstack.otlp_receiver import OtlpReceiver, ReceivedSpan
from tienda_devstack.stack import Stack

from .exercise import Exercised, new_traceparent

pytestmark = pytest.mark.e2e

SERVER, CLIENT, PRODUCER, CONSUMER = 2, 3, 4, 5


def test_an_order_is_one_trace_across_services_and_the_event_hop(
    api: httpx.Client,
    admin: User,
    customer: User,
    otlp_receiver: OtlpReceiver,
    stack: Stack,
    webhook_receiver: WebhookReceiver,
) -> None:
    hook = api.post(
        "/v1/webhooks",
        headers=customer.headers,
        json={
            "url": f"{webhook_receiver.url}/trace-{uuid.uuid4().hex}",
            "event_types": ["order.confirmed"],
        },
    )
    assert hook.status_code == 200, hook.text
    webhook_id = hook.json()["id"]
    product = create_product(api, admin, stock=3)
    order_id = submit_order(api, customer, product["id"])["id"]
    wait_terminal(api, customer, order_id)
    choreographed = stack.env["ORDER_SAGA_MODE"] == "choreography"

    def redis_call(span: ReceivedSpan) -> bool:
        return span.kind == CLIENT and span.attributes.get("db.system") == "redis"

    def insert(span: ReceivedSpan, service: str, table: str) -> bool:
        """A SQL INSERT of the service into table, named as the database semantic conventions
        name it."""
        return (
            span.service == service
            and span.kind == CLIENT
            and bool(span.attributes.get("db.system"))
            and bool(span.attributes.get("db.name"))
            and span.name == f"INSERT {table}"
            and str(span.attributes.get("db.statement", "")).startswith(f"INSERT INTO {table} ")
        )

    def order_trace(spans: list[ReceivedSpan]) -> str | None:
        """The trace of the gateway request that placed the order (one pass over the spans:
        by the end of a full run the receiver holds tens of thousands)."""
        with_order = {s.trace_id for s in spans if s.attributes.get("order.id") == order_id}
        for span in spans:
            if (
                span.trace_id in with_order
                and span.service == "gateway"
                and span.kind == SERVER
                and (
                    span.attributes.get("order.id") == order_id
                    or "/v1/orders" in str(span.attributes.get("http.target", ""))
                    or "/v1/orders" in str(span.attributes.get("url.path", ""))
                )
            ):
                return span.trace_id
        return None

    def product_created(span: ReceivedSpan) -> bool:
        return (
            span.service == "product_service"
            and span.kind == SERVER
            and span.name.endswith("/CreateProduct")
            and span.attributes.get("product.id") == product["id"]
        )

    def missing(spans: list[ReceivedSpan]) -> list[str]:
        """What the test waits for that has not arrived yet."""
        trace_id = order_trace(spans)
        trace = [s for s in spans if s.trace_id == trace_id] if trace_id else []
        names = {s.name for s in trace}
        wanted = {
            "the order's trace": bool(trace),
            "gateway, order_service and product_service": {
                "gateway",
                "order_service",
                "product_service",
            }
            <= {s.service for s in trace},
            "a consumer span": any(s.kind == CONSUMER for s in trace),
            "saga pay, email send and webhook delivery": {
                "saga pay",
                "email send",
                "webhook delivery",
            }
            <= names,
            "a Redis call": any(redis_call(s) for s in trace),
            "an INSERT of order_service": any(insert(s, "order_service", "orders") for s in trace),
            "an INSERT of product_service": any(
                insert(s, "product_service", "reservations") for s in trace
            ),
            "product_service handling order.created": not choreographed
            or any(
                s.service == "product_service" and s.name.endswith(" handle order.created")
                for s in trace
            ),
            "product_service's CreateProduct with product.id": any(
                product_created(s) for s in spans
            ),
        }
        return [what for what, found in wanted.items() if not found]

    try:
        spans = otlp_receiver.wait_for(lambda spans: not missing(spans), timeout=60)
    except AssertionError:
        pytest.fail(f"never arrived: {missing(otlp_receiver.snapshot())}")
    trace_id = order_trace(spans)
    trace = [s for s in spans if s.trace_id == trace_id]
    by_id = {s.span_id: s for s in trace}

    def under_a_producer(span: ReceivedSpan) -> bool:
        """Its parent, or a span it links to, is a producer span of the same trace."""
        related = (span.parent_span_id, *span.linked_span_ids)
        return any(by_id.get(i) is not None and by_id[i].kind == PRODUCER for i in related)

    # the Redis hop: a consumer span whose parent is a producer span of the same trace
    hops = [s for s in trace if s.kind == CONSUMER and under_a_producer(s)]
    assert hops, [(s.service, s.name, s.kind) for s in trace]
    # choreographed, product_service reserves the stock on order.created: the BatchGetProducts
    # call of the request alone would not show that the event reached it across Redis
    if choreographed:
        handled = [
            s
            for s in trace
            if s.service == "product_service" and s.name.endswith(" handle order.created")
        ]
        assert handled and all(s.kind == CONSUMER and under_a_producer(s) for s in handled), [
            (s.name, s.kind, by_id.get(s.parent_span_id)) for s in handled
        ]
    # the relay's round trip to Redis (its pipelined XADDs, named as a batch when there are
    # several), under the relay span of an event of the order; other Redis calls may join the
    # trace too, e.g. the attempt counter of a handler retried because its group heard of the
    # order before the customer
    relayed = [s for s in trace if redis_call(s) and s.name in ("XADD", "BATCH XADD")]
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
    # product_service and the payment), the email and the webhook about the confirmed order
    steps = [s for s in trace if s.name.startswith("saga ")]
    assert all(s.attributes.get("order.id") == order_id for s in steps)
    if stack.env["ORDER_SAGA_MODE"] == "orchestration":
        assert any(
            s.service == "product_service" and s.name.endswith("/ReserveStock") for s in trace
        )
    deliveries = [s for s in trace if s.name == "webhook delivery"]
    assert [s.attributes.get("webhook.id") for s in deliveries] == [webhook_id], deliveries
    assert all(s.service == "order_service" and s.parent_span_id in by_id for s in deliveries)
    # deferred work carries the business ids of the event that caused it
    assert all(s.attributes.get("order.id") == order_id for s in deliveries), deliveries
    emails = [s for s in trace if s.name == "email send"]
    assert emails and all(
        (s.attributes.get("order.id"), s.attributes.get("user.id")) == (order_id, customer.id)
        for s in emails
    ), emails
    # the statements of both services' writes, each in the trace of the work that made it
    for service, table in (("order_service", "orders"), ("product_service", "reservations")):
        inserts = [s for s in trace if insert(s, service, table)]
        assert inserts and all(s.parent_span_id in by_id for s in inserts), service
    # business ids: the customer on order_service's request, the product on its creation
    assert any(
        s.service == "order_service"
        and s.kind == SERVER
        and s.name.endswith("/CreateOrder")
        and s.attributes.get("user.id") == customer.id
        for s in trace
    ), [(s.service, s.name, s.attributes.get("user.id")) for s in trace if s.kind == SERVER]
    created = [s for s in spans if product_created(s)]
    assert all(s.attributes.get("user.id") == admin.id for s in created), created
    # every span has exactly one root: the gateway's request
    roots = [s for s in trace if not s.parent_span_id]
    assert [r.service for r in roots] == ["gateway"]


def recorded_text(span: ReceivedSpan) -> str:
    """Everything of a span a secret could hide in: name, attributes, events and status."""
    events = [(e.name, e.attributes) for e in span.events]
    return repr((span.name, span.attributes, events, span.status_message))


def test_spans_carry_resource_attributes_and_no_secrets(
    api: httpx.Client, otlp_receiver: OtlpReceiver, exercised: Exercised
) -> None:
    # One request to each service in a trace of its own, after everything exercised: a
    # process exports its spans in the order they end, so once these arrived, every span
    # the exercise made before them did too (the webhook deliveries, which may end after,
    # are waited for by themselves).
    customer = exercised.customer
    last = {
        "auth_service": ("/v1/users/me", customer.headers),
        "order_service": (f"/v1/orders/{exercised.order_ids['tok_ok']}", customer.headers),
        "product_service": (f"/v1/products/{exercised.product_id}", {}),
    }
    traces = {}
    for service, (path, headers) in last.items():
        traceparent, traces[service] = new_traceparent()
        response = api.get(path, headers={**headers, "traceparent": traceparent})
        assert response.status_code == 200, response.text

    def arrived(spans: list[ReceivedSpan]) -> bool:
        served = {(s.service, s.trace_id) for s in spans if s.kind == SERVER}
        delivered = [s for s in spans if s.attributes.get("webhook.id") == exercised.webhook_id]
        return len(delivered) >= len(exercised.order_ids) and all(
            {(service, trace_id), ("gateway", trace_id)} <= served
            for service, trace_id in traces.items()
        )

    spans = otlp_receiver.wait_for(arrived)
    services = {r.get("service.name") for r in otlp_receiver.resources}
    assert {"gateway", "auth_service", "product_service", "order_service"} <= services
    assert all(
        r.get("service.version") and r.get("deployment.environment") == "test"
        for r in otlp_receiver.resources
    )
    # the failed login and the replayed refresh token left exception events and error
    # statuses: the search below reads those too
    assert any(s.events for s in spans) and any(s.status_message for s in spans)
    for span in spans:
        # values, not names: a column called password_hash in a SQL statement is no secret
        leaked = exercised.secret_in(recorded_text(span))
        assert leaked is None, (span.service, span.name, leaked)
