"""In-memory stand-ins for auth_service's database, password hashing and clock."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from auth_service.adapters.passwords import AbstractPasswordHasher
from auth_service.adapters.repository import (
    AbstractRefreshTokenRepository,
    AbstractSigningKeyRepository,
    AbstractUserRepository,
)
from auth_service.domain.errors import EmailAlreadyRegistered
from auth_service.domain.model import (
    RefreshToken,
    ServiceClients,
    SigningKey,
    TokenPolicy,
    User,
)
from auth_service.service_layer.services import Dependencies
from auth_service.service_layer.unit_of_work import AbstractUnitOfWork
from google.protobuf.message import Message


class FakeUserRepository(AbstractUserRepository):
    def __init__(self) -> None:
        self.rows: dict[str, User] = {}

    async def add(self, user: User) -> None:
        if any(u.email == user.email for u in self.rows.values()):
            raise EmailAlreadyRegistered()
        self.rows[user.id] = replace(user)

    async def get(self, user_id: str, *, for_update: bool = False) -> User | None:
        user = self.rows.get(user_id)
        return None if user is None else replace(user)

    async def get_by_email(self, email: str) -> User | None:
        return next((replace(u) for u in self.rows.values() if u.email == email), None)

    async def update(self, user: User) -> None:
        if user.id in self.rows:
            self.rows[user.id] = replace(user)

    async def delete(self, user_id: str) -> None:
        self.rows.pop(user_id, None)


class FakeRefreshTokenRepository(AbstractRefreshTokenRepository):
    def __init__(self) -> None:
        self.rows: dict[str, RefreshToken] = {}

    async def add(self, token: RefreshToken) -> None:
        self.rows[token.id] = replace(token)

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        return next((replace(t) for t in self.rows.values() if t.token_hash == token_hash), None)

    async def mark_used(self, token_id: str, *, at: datetime) -> bool:
        token = self.rows[token_id]
        if token.used_at is not None:
            return False
        token.used_at = at
        return True

    async def revoke_family(self, family_id: str, *, at: datetime) -> None:
        for token in self.rows.values():
            if token.family_id == family_id and token.revoked_at is None:
                token.revoked_at = at

    async def revoke_for_user(self, user_id: str, *, at: datetime) -> None:
        for token in self.rows.values():
            if token.user_id == user_id and token.revoked_at is None:
                token.revoked_at = at

    async def delete_for_user(self, user_id: str) -> None:
        self.rows = {k: t for k, t in self.rows.items() if t.user_id != user_id}


class FakeSigningKeyRepository(AbstractSigningKeyRepository):
    def __init__(self) -> None:
        self.rows: list[SigningKey] = []

    async def add(self, key: SigningKey) -> None:
        self.rows.append(key)

    async def active(self) -> SigningKey | None:
        return next((k for k in reversed(self.rows) if k.active), None)

    async def all(self) -> list[SigningKey]:
        return list(self.rows)

    async def deactivate_all(self) -> None:
        self.rows = [replace(k, active=False) for k in self.rows]

    async def take_turns(self) -> None:
        pass  # one event loop, and a unit of work that never awaits between read and write


@dataclass(frozen=True)
class RecordedEvent:
    event_type: str
    subject: str
    payload: Message


class FakeUnitOfWork(AbstractUnitOfWork):
    """One shared in-memory store; changes apply at once and `commits` counts commits.

    Events are held back until commit (`published`) and dropped on rollback, as the outbox does.
    """

    def __init__(self) -> None:
        self.users = FakeUserRepository()
        self.refresh_tokens = FakeRefreshTokenRepository()
        self.signing_keys = FakeSigningKeyRepository()
        self.commits = 0
        self.pending: list[RecordedEvent] = []
        self.published: list[RecordedEvent] = []

    async def commit(self) -> None:
        self.commits += 1
        self.published += self.pending
        self.pending = []

    async def rollback(self) -> None:
        self.pending = []

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        self.pending.append(RecordedEvent(event_type, subject, payload))


class FakePasswordHasher(AbstractPasswordHasher):
    """Readable "hashes" (`scheme$password`) that record which hashes were checked."""

    def __init__(self) -> None:
        self.scheme = "fake"
        self.verified: list[str | None] = []

    async def hash(self, password: str) -> str:
        return f"{self.scheme}${password}"

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.verified.append(password_hash)
        # Any scheme verifies, as argon2 verifies hashes made with other cost parameters.
        return password_hash is not None and password_hash.partition("$")[2] == password

    def needs_rehash(self, password_hash: str) -> bool:
        return not password_hash.startswith(f"{self.scheme}$")


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


POLICY = TokenPolicy(
    issuer="tienda-auth",
    audience="tienda",
    access_ttl=timedelta(minutes=15),
    refresh_ttl=timedelta(days=30),
)


SERVICE_SECRETS = {"order_service": "o" * 40, "product_service": "p" * 40}


def fake_dependencies(
    uow: FakeUnitOfWork | None = None,
    passwords: FakePasswordHasher | None = None,
    clock: FakeClock | None = None,
) -> Dependencies:
    """Dependencies over fakes (and SERVICE_SECRETS); pass the fakes in to inspect them."""
    shared = uow or FakeUnitOfWork()
    return Dependencies(
        uow=lambda: shared,
        passwords=passwords or FakePasswordHasher(),
        policy=POLICY,
        clock=clock or FakeClock(),
        service_clients=ServiceClients.from_secrets(SERVICE_SECRETS),
    )
