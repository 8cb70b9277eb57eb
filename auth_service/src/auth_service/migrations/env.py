"""Alembic environment of auth_service: its own tables and the platform's outbox tables."""

import tienda_platform.consumers
import tienda_platform.outbox  # noqa: F401  (registers outbox_events)
from auth_service.adapters.orm import AuthTable
from tienda_platform.database import PLATFORM_METADATA, run_migrations_in_env

run_migrations_in_env([AuthTable.metadata, PLATFORM_METADATA])
