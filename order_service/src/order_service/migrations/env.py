"""Alembic environment of order_service: its own tables, and the platform's outbox and
processed-events tables."""

from order_service.adapters import (  # noqa: F401 - each registers its tables
    notification_orm,
    orm,
    webhook_orm,
)
from tienda_platform.consumers import ProcessedEvent  # noqa: F401 - registers its table
from tienda_platform.database import PLATFORM_METADATA, run_migrations_in_env
from tienda_platform.outbox import OutboxEvent  # noqa: F401 - registers its table

run_migrations_in_env([orm.metadata, PLATFORM_METADATA])
