"""tienda's REST gateway: REST/JSON transcoded to gRPC from the contracts' google.api.http rules.

Public API: `gateway.app.create_app(settings=...)` (the Starlette app), `gateway.config.Settings`
and `get_settings()`, and `python -m gateway` to serve it.
"""

__version__ = "0.1.0"
