"""Where every domain event goes: its stream, its payload type, and who consumes it.

One stream per publishing service; one consumer group per consuming role. Every group gets
every event of its streams (publish/subscribe); the replicas of a group share its entries
(a message queue). The AsyncAPI document is generated from these declarations.
"""

from __future__ import annotations

from dataclasses import dataclass

from events.v1 import events_pb2
from google.protobuf.message import Message

AUTH_EVENTS = "tienda.auth.events"
PRODUCT_EVENTS = "tienda.product.events"
ORDER_EVENTS = "tienda.order.events"
STREAMS = (AUTH_EVENTS, PRODUCT_EVENTS, ORDER_EVENTS)
DEAD_LETTER_SUFFIX = ".dead-letter"


@dataclass(frozen=True)
class EventType:
    name: str
    stream: str
    payload: type[Message]
    summary: str


EVENT_TYPES: dict[str, EventType] = {
    e.name: e
    for e in (
        EventType(
            "user.registered", AUTH_EVENTS, events_pb2.UserRegistered, "A customer signed up."
        ),
        EventType(
            "user.updated", AUTH_EVENTS, events_pb2.UserUpdated, "A user changed their profile."
        ),
        EventType(
            "user.deleted", AUTH_EVENTS, events_pb2.UserDeleted, "A user deleted their account."
        ),
        EventType(
            "product.created", PRODUCT_EVENTS, events_pb2.ProductChanged, "A product was added."
        ),
        EventType(
            "product.updated", PRODUCT_EVENTS, events_pb2.ProductChanged, "A product changed."
        ),
        EventType(
            "stock.reserved",
            PRODUCT_EVENTS,
            events_pb2.StockReserved,
            "Stock was set aside for an order.",
        ),
        EventType(
            "stock.rejected",
            PRODUCT_EVENTS,
            events_pb2.StockRejected,
            "Stock could not be reserved.",
        ),
        EventType(
            "stock.released", PRODUCT_EVENTS, events_pb2.StockReleased, "A reservation was undone."
        ),
        EventType(
            "stock.committed",
            PRODUCT_EVENTS,
            events_pb2.StockCommitted,
            "A reservation became final.",
        ),
        EventType(
            "order.created", ORDER_EVENTS, events_pb2.OrderCreated, "An order was placed (PENDING)."
        ),
        EventType(
            "payment.approved",
            ORDER_EVENTS,
            events_pb2.PaymentApproved,
            "The payment of an order went through.",
        ),
        EventType(
            "payment.declined",
            ORDER_EVENTS,
            events_pb2.PaymentDeclined,
            "The payment was declined or timed out.",
        ),
        EventType(
            "order.confirmed",
            ORDER_EVENTS,
            events_pb2.OrderStatusChanged,
            "An order was confirmed.",
        ),
        EventType(
            "order.cancelled",
            ORDER_EVENTS,
            events_pb2.OrderStatusChanged,
            "An order was cancelled.",
        ),
        EventType(
            "order.rejected", ORDER_EVENTS, events_pb2.OrderStatusChanged, "An order was rejected."
        ),
    )
}


@dataclass(frozen=True)
class Subscription:
    """A consumer group reading some event types of one stream."""

    group: str
    stream: str
    event_types: tuple[str, ...]
    description: str


def dead_letter_stream(stream: str) -> str:
    return stream + DEAD_LETTER_SUFFIX


def _sub(group: str, stream: str, description: str, *event_types: str) -> Subscription:
    return Subscription(group, stream, event_types, description)


# Every consumer group, and what it reads. Groups are named after their role; the service that
# hosts a group is the only one that reads with that name.
SUBSCRIPTIONS: tuple[Subscription, ...] = (
    _sub(
        "product_service",
        ORDER_EVENTS,
        "product_service: the stock side of the choreographed saga",
        "order.created",
        "order.confirmed",
        "order.cancelled",
        "payment.declined",
    ),
    _sub(
        "order_service",
        PRODUCT_EVENTS,
        "order_service: the order side of the choreographed saga",
        "stock.reserved",
        "stock.rejected",
        "stock.released",
    ),
    _sub(
        "order_service",
        AUTH_EVENTS,
        "order_service: customer snapshots (replicated user data)",
        "user.registered",
        "user.updated",
        "user.deleted",
    ),
    _sub(
        "order_read_model",
        ORDER_EVENTS,
        "order_service: the order summaries read model (CQRS)",
        "order.created",
        "order.confirmed",
        "order.cancelled",
        "order.rejected",
    ),
    _sub(
        "order_read_model",
        AUTH_EVENTS,
        "order_service: customer names in the read model",
        "user.registered",
        "user.updated",
        "user.deleted",
    ),
    _sub("notifications", AUTH_EVENTS, "order_service: welcome emails", "user.registered"),
    _sub(
        "notifications",
        ORDER_EVENTS,
        "order_service: emails on terminal order states",
        "order.confirmed",
        "order.cancelled",
        "order.rejected",
    ),
    _sub(
        "registration_counter",
        AUTH_EVENTS,
        "order_service: counts registrations",
        "user.registered",
    ),
    _sub(
        "webhooks",
        ORDER_EVENTS,
        "order_service: webhook deliveries",
        "order.created",
        "order.confirmed",
        "order.cancelled",
        "order.rejected",
    ),
)


def subscriptions_of(group: str) -> tuple[Subscription, ...]:
    """The streams and event types one consumer group reads."""
    return tuple(s for s in SUBSCRIPTIONS if s.group == group)
