"""SQLModel tables of auth_service's own database.

The tables use a registry of their own rather than SQLModel's global one: several services'
tables are imported into one test process, and each migration check must see only its own.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel


class AuthTable(SQLModel, registry=registry()):
    """Base of auth_service's tables; `AuthTable.metadata` is what the migrations build."""


def _utc_column(*, nullable: bool) -> Any:
    return Field(sa_column=sa.Column(sa.DateTime(timezone=True), nullable=nullable))


class UserRow(AuthTable, table=True):
    __tablename__ = "users"
    __table_args__ = (
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.CheckConstraint("role IN ('customer', 'admin')", name="ck_users_role"),
    )

    id: str = Field(sa_column=sa.Column(sa.String(36), primary_key=True))
    email: str = Field(sa_column=sa.Column(sa.String(254), nullable=False))
    full_name: str = Field(sa_column=sa.Column(sa.String(200), nullable=False))
    password_hash: str = Field(sa_column=sa.Column(sa.String(255), nullable=False))
    role: str = Field(sa_column=sa.Column(sa.String(16), nullable=False))
    create_time: datetime = _utc_column(nullable=False)
    update_time: datetime = _utc_column(nullable=False)


class RefreshTokenRow(AuthTable, table=True):
    __tablename__ = "refresh_tokens"
    __table_args__ = (
        sa.UniqueConstraint("token_hash", name="uq_refresh_tokens_token_hash"),
        sa.Index("ix_refresh_tokens_user_id", "user_id"),
        sa.Index("ix_refresh_tokens_family_id", "family_id"),
    )

    id: str = Field(sa_column=sa.Column(sa.String(36), primary_key=True))
    user_id: str = Field(
        sa_column=sa.Column(
            sa.String(36),
            sa.ForeignKey("users.id", name="fk_refresh_tokens_user_id", ondelete="CASCADE"),
            nullable=False,
        )
    )
    family_id: str = Field(sa_column=sa.Column(sa.String(36), nullable=False))
    token_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    expires_at: datetime = _utc_column(nullable=False)
    used_at: datetime | None = _utc_column(nullable=True)
    revoked_at: datetime | None = _utc_column(nullable=True)
    create_time: datetime = _utc_column(nullable=False)


class SigningKeyRow(AuthTable, table=True):
    __tablename__ = "signing_keys"

    kid: str = Field(sa_column=sa.Column(sa.String(64), primary_key=True))
    private_key_pem: str = Field(sa_column=sa.Column(sa.Text(), nullable=False))
    public_jwk: dict[str, Any] = Field(sa_column=sa.Column(sa.JSON(), nullable=False))
    create_time: datetime = _utc_column(nullable=False)
    active: bool = Field(sa_column=sa.Column(sa.Boolean(), nullable=False))
