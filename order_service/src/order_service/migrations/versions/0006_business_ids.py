"""The business ids of deferred work: a webhook delivery keeps the order its event is about,
an email the user and the order it is about, so that their spans carry order.id and user.id.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("webhook_deliveries", "order_id"),
    ("outgoing_emails", "user_id"),
    ("outgoing_emails", "order_id"),
)


def upgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(column, sa.String(length=36), nullable=False, server_default="")
            )


def downgrade() -> None:
    for table, column in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
