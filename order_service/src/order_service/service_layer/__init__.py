"""Use cases of order_service: the unit of work, the ports, the services and the saga."""
