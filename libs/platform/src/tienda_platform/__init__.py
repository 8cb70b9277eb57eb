"""Shared infrastructure for tienda's services. No domain logic lives here.

Public API: the modules `settings`, `logging`, `grpc_server`, `grpc_client`, `auth`, `errors`,
`database`, `unit_of_work`, `pagination`, `ids`, and `testing` (pytest fixtures).
"""

__version__ = "0.1.0"
