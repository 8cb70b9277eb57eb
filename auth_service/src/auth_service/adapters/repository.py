"""Repositories of users, refresh tokens and signing keys: abstract ports and SQL adapters."""

from __future__ import annotations

import abc
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.database import advisory_lock_key

from auth_service.adapters.orm import RefreshTokenRow, SigningKeyRow, UserRow
from auth_service.domain.errors import EmailAlreadyRegistered
from auth_service.domain.model import RefreshToken, Role, SigningKey, User


class AbstractUserRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, user: User) -> None:
        """Store a new user; raises EmailAlreadyRegistered when the email is taken."""

    @abc.abstractmethod
    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        """The user, or None; for_update locks the user's row until the transaction ends.

        Every change to a user or to their refresh tokens holds it: a refresh, a replay that
        revokes a family, a new password that revokes every session, a login and a deletion
        of one user run one after another, each seeing what the one before committed."""

    @abc.abstractmethod
    async def get_by_email(self, email: str) -> User | None:
        """The user with this normalised email."""

    @abc.abstractmethod
    async def update(self, user: User) -> None:
        """Save the name, password hash, role and update time of an existing user."""

    @abc.abstractmethod
    async def delete(self, user_id: str) -> None: ...


class AbstractRefreshTokenRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, token: RefreshToken) -> None: ...

    @abc.abstractmethod
    async def get_by_hash(self, token_hash: str) -> RefreshToken | None: ...

    @abc.abstractmethod
    async def mark_used(self, token_id: str, *, at: datetime) -> bool:
        """Spend an unused token; False when it was already spent (a concurrent refresh won)."""

    @abc.abstractmethod
    async def revoke_family(self, family_id: str, *, at: datetime) -> None: ...

    @abc.abstractmethod
    async def revoke_for_user(self, user_id: str, *, at: datetime) -> None: ...

    @abc.abstractmethod
    async def delete_for_user(self, user_id: str) -> None: ...


class AbstractSigningKeyRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, key: SigningKey) -> None: ...

    @abc.abstractmethod
    async def active(self) -> SigningKey | None:
        """The newest active key: the one that signs new tokens."""

    @abc.abstractmethod
    async def all(self) -> list[SigningKey]:
        """Every stored key, oldest first; their public halves form the JWKS."""

    @abc.abstractmethod
    async def deactivate_all(self) -> None: ...

    @abc.abstractmethod
    async def take_turns(self) -> None:
        """Make this transaction wait for any other that has called take_turns and has not
        ended, and hold the others off until it ends: replicas that start on an empty
        database together create one key between them, and two rotations at once leave one
        key active."""


def _utc(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else _utc(value)


def _user(row: UserRow) -> User:
    return User(
        id=row.id,
        email=row.email,
        full_name=row.full_name,
        password_hash=row.password_hash,
        role=Role(row.role),
        create_time=_utc(row.create_time),
        update_time=_utc(row.update_time),
    )


def _refresh_token(row: RefreshTokenRow) -> RefreshToken:
    return RefreshToken(
        id=row.id,
        user_id=row.user_id,
        family_id=row.family_id,
        token_hash=row.token_hash,
        expires_at=_utc(row.expires_at),
        create_time=_utc(row.create_time),
        used_at=_utc_or_none(row.used_at),
        revoked_at=_utc_or_none(row.revoked_at),
    )


def _signing_key(row: SigningKeyRow) -> SigningKey:
    return SigningKey(
        kid=row.kid,
        private_key_pem=row.private_key_pem,
        public_jwk=dict(row.public_jwk),
        create_time=_utc(row.create_time),
        active=row.active,
    )


class SqlUserRepository(AbstractUserRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, user: User) -> None:
        self._session.add(
            UserRow(
                id=user.id,
                email=user.email,
                full_name=user.full_name,
                password_hash=user.password_hash,
                role=user.role.value,
                create_time=user.create_time,
                update_time=user.update_time,
            )
        )
        try:
            await self._session.flush()
        except IntegrityError:
            # The only unique column besides the fresh UUIDv7 key is the email.
            raise EmailAlreadyRegistered() from None

    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        query = select(UserRow).where(UserRow.id == user_id)
        if for_update:  # SQLite has no FOR UPDATE: its writers hold the database's lock
            query = query.with_for_update()
        row = (await self._session.exec(query)).first()
        return None if row is None else _user(row)

    async def get_by_email(self, email: str) -> User | None:
        row = (await self._session.exec(select(UserRow).where(UserRow.email == email))).first()
        return None if row is None else _user(row)

    async def update(self, user: User) -> None:
        await self._session.exec(
            sa.update(UserRow)
            .where(col(UserRow.id) == user.id)
            .values(
                full_name=user.full_name,
                password_hash=user.password_hash,
                role=user.role.value,
                update_time=user.update_time,
            )
        )

    async def delete(self, user_id: str) -> None:
        await self._session.exec(sa.delete(UserRow).where(col(UserRow.id) == user_id))


class SqlRefreshTokenRepository(AbstractRefreshTokenRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, token: RefreshToken) -> None:
        self._session.add(
            RefreshTokenRow(
                id=token.id,
                user_id=token.user_id,
                family_id=token.family_id,
                token_hash=token.token_hash,
                expires_at=token.expires_at,
                used_at=token.used_at,
                revoked_at=token.revoked_at,
                create_time=token.create_time,
            )
        )
        await self._session.flush()

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        statement = select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash)
        row = (await self._session.exec(statement)).first()
        return None if row is None else _refresh_token(row)

    async def mark_used(self, token_id: str, *, at: datetime) -> bool:
        # Conditional on the token being unused and unrevoked as it is now: of two concurrent
        # refreshes only one updates the row, and none spends a token revoked meanwhile.
        result = await self._session.exec(
            sa.update(RefreshTokenRow)
            .where(
                col(RefreshTokenRow.id) == token_id,
                col(RefreshTokenRow.used_at).is_(None),
                col(RefreshTokenRow.revoked_at).is_(None),
            )
            .values(used_at=at)
        )
        return result.rowcount == 1

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        await self._session.exec(
            sa.update(RefreshTokenRow)
            .where(
                col(RefreshTokenRow.family_id) == family_id,
                col(RefreshTokenRow.revoked_at).is_(None),
            )
            .values(revoked_at=at)
        )

    async def revoke_for_user(self, user_id: str, *, at: datetime) -> None:
        await self._session.exec(
            sa.update(RefreshTokenRow)
            .where(
                col(RefreshTokenRow.user_id) == user_id,
                col(RefreshTokenRow.revoked_at).is_(None),
            )
            .values(revoked_at=at)
        )

    async def delete_for_user(self, user_id: str) -> None:
        await self._session.exec(
            sa.delete(RefreshTokenRow).where(col(RefreshTokenRow.user_id) == user_id)
        )


class SqlSigningKeyRepository(AbstractSigningKeyRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, key: SigningKey) -> None:
        self._session.add(
            SigningKeyRow(
                kid=key.kid,
                private_key_pem=key.private_key_pem,
                public_jwk=key.public_jwk,
                create_time=key.create_time,
                active=key.active,
            )
        )
        await self._session.flush()

    async def take_turns(self) -> None:
        # On SQLite a writing transaction holds the database's write lock from its BEGIN
        # (tienda_platform.database), so writers already take turns.
        if self._session.get_bind().dialect.name == "postgresql":
            await self._session.exec(  # type: ignore[call-overload]
                sa.select(sa.func.pg_advisory_xact_lock(advisory_lock_key("signing_keys")))
            )

    async def active(self) -> SigningKey | None:
        statement = (
            select(SigningKeyRow)
            .where(col(SigningKeyRow.active).is_(True))
            .order_by(col(SigningKeyRow.create_time).desc(), col(SigningKeyRow.kid).desc())
        )
        row = (await self._session.exec(statement)).first()
        return None if row is None else _signing_key(row)

    async def all(self) -> list[SigningKey]:
        statement = select(SigningKeyRow).order_by(
            col(SigningKeyRow.create_time), col(SigningKeyRow.kid)
        )
        return [_signing_key(row) for row in (await self._session.exec(statement)).all()]

    async def deactivate_all(self) -> None:
        await self._session.exec(
            sa.update(SigningKeyRow).where(col(SigningKeyRow.active).is_(True)).values(active=False)
        )
