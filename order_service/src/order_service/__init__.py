"""order_service: orders, their item snapshots and payments, placed through a saga
(orchestrated from a saga log, or choreographed by events), with a customer snapshot and an
order-summaries read model fed by events.

Public API:
- `python -m order_service` serves `order.v1.OrderService` and runs the outbox relay, the saga
  worker and the consumer groups; `python -m order_service migrate` upgrades its database.
- `order_service.bootstrap.bootstrap()` wires the real (or overridden) pieces into an `OrderApp`.
- `order_service.config.Settings` / `get_settings()`: its configuration.
"""

__version__ = "0.1.0"
