"""Alembic environment of product_service: its own tables and the platform's event tables."""

import tienda_platform.consumers
import tienda_platform.outbox  # noqa: F401  (register processed_events and outbox_events)
from product_service.adapters.orm import ProductTable
from tienda_platform.database import PLATFORM_METADATA, run_migrations_in_env

run_migrations_in_env([ProductTable.metadata, PLATFORM_METADATA])
