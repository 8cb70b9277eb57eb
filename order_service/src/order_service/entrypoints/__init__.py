"""Entrypoints: the gRPC servicer of order.v1.OrderService."""
