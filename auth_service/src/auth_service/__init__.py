"""auth_service: users, password hashes, roles, refresh tokens and signing keys of tienda; it
issues access tokens to users and to other services, and publishes user.registered,
user.updated and user.deleted through its transactional outbox.

Public API:
- `python -m auth_service [serve | migrate | rotate-keys]`
- `auth_service.config.Settings` / `get_settings()`: the service's settings.
- `auth_service.bootstrap.bootstrap(settings=..., uow=..., passwords=..., clock=...)` -> `AuthApp`
  (its `server`, `prepare()`, `background` jobs (the outbox relay) and `close()`).
- `auth_service.entrypoints.grpc_servicer.PUBLIC_METHODS`: the RPCs that need no access token.
"""

__version__ = "0.1.0"
