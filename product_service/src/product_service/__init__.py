"""product_service: the catalogue, prices, stock and stock reservations of tienda.

Public API:
- `python -m product_service [serve | migrate]`
- `product_service.config.Settings` / `get_settings()`: the service's settings.
- `product_service.bootstrap.bootstrap(settings=..., uow=..., clock=..., verifier=...)` ->
  `ProductApp` (its `server`, `prepare()`, `background` jobs and `close()`).
- `product_service.entrypoints.grpc_servicer.PUBLIC_METHODS`: the RPCs that need no access token.
- `product_service.entrypoints.event_consumers.GROUP`: the consumer group of its saga handlers.
"""

__version__ = "0.1.0"
