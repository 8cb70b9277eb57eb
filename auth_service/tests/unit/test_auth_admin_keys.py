"""The bootstrap admin and the signing keys, over fakes."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from auth_service.domain.model import Role, User
from auth_service.service_layer import services, signing_keys
from auth_service.service_layer.services import Dependencies
from loguru import logger
from tienda_platform.auth import TokenVerifier

from .fakes import FakeUnitOfWork

pytestmark = pytest.mark.unit

ADMIN_PASSWORD = "admin-password-2024"


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """Every log record's message and extra fields, unredacted."""
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['message']} {m.record['extra']}"))
    yield lines
    logger.remove(sink)


async def test_bootstrap_creates_the_admin_and_never_logs_the_password(
    deps: Dependencies, uow: FakeUnitOfWork, logs: list[str]
) -> None:
    await services.bootstrap_admin(deps=deps, email=" Root@Example.com", password=ADMIN_PASSWORD)
    admin = await uow.users.get_by_email("root@example.com")
    assert admin is not None and admin.role is Role.ADMIN
    tokens = await services.login(deps=deps, email="root@example.com", password=ADMIN_PASSWORD)
    assert jwt.decode(tokens.access_token, options={"verify_signature": False})["role"] == "admin"
    assert any("bootstrap admin created" in line for line in logs)
    assert not any(ADMIN_PASSWORD in line or admin.password_hash in line for line in logs)


async def test_bootstrap_promotes_an_existing_user_and_keeps_their_password(
    deps: Dependencies, uow: FakeUnitOfWork, logs: list[str]
) -> None:
    user = await services.register(
        deps=deps, email="root@example.com", password="users-own-pass-1", full_name="Rooty"
    )
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=ADMIN_PASSWORD)
    promoted = uow.users.rows[user.id]
    assert promoted.role is Role.ADMIN and promoted.full_name == "Rooty"
    assert promoted.password_hash == user.password_hash
    assert any("bootstrap admin promoted" in line for line in logs)


async def test_bootstrap_copes_with_another_replica_creating_the_admin_first(
    deps: Dependencies, uow: FakeUnitOfWork, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await services.register(
        deps=deps, email="root@example.com", password="users-own-pass-1", full_name="Rooty"
    )
    read = uow.users.get_by_email
    reads: list[str] = []

    async def first_read_misses(email: str) -> User | None:
        # As if the other replica's insert landed just after our first read.
        reads.append(email)
        return None if len(reads) == 1 else await read(email)

    monkeypatch.setattr(uow.users, "get_by_email", first_read_misses)
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=ADMIN_PASSWORD)
    assert len(reads) == 2
    assert [(u.id, u.role) for u in uow.users.rows.values()] == [(other.id, Role.ADMIN)]


async def test_bootstrap_twice_keeps_one_admin(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=ADMIN_PASSWORD)
    await services.bootstrap_admin(deps=deps, email="root@example.com", password=ADMIN_PASSWORD)
    assert [u.email for u in uow.users.rows.values()] == ["root@example.com"]


async def test_the_first_key_is_created_once(deps: Dependencies, uow: FakeUnitOfWork) -> None:
    first = await signing_keys.ensure_signing_key(deps=deps)
    assert await signing_keys.ensure_signing_key(deps=deps) == first
    assert len(uow.signing_keys.rows) == 1
    [jwk] = await signing_keys.get_jwks(deps=deps)
    assert jwk == {
        **jwk,
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": first.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}


async def test_rotation_signs_with_the_new_key_and_keeps_old_tokens_valid(
    deps: Dependencies, verifier: TokenVerifier
) -> None:
    await services.register(
        deps=deps, email="ada@example.com", password="ada-password-1", full_name="Ada"
    )
    before = await services.login(deps=deps, email="ada@example.com", password="ada-password-1")
    old_key = await signing_keys.ensure_signing_key(deps=deps)
    new_key = await signing_keys.rotate_signing_key(deps=deps)
    after = await services.login(deps=deps, email="ada@example.com", password="ada-password-1")
    assert jwt.get_unverified_header(before.access_token)["kid"] == old_key.kid
    assert jwt.get_unverified_header(after.access_token)["kid"] == new_key.kid != old_key.kid
    assert [k["kid"] for k in await signing_keys.get_jwks(deps=deps)] == [old_key.kid, new_key.kid]
    await verifier.verify(before.access_token)
    await verifier.verify(after.access_token)
