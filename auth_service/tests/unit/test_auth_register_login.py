"""Register and Login over fakes."""

from __future__ import annotations

import jwt
import pytest
from auth_service.domain.model import Role
from auth_service.service_layer import services
from auth_service.service_layer.services import Dependencies
from tienda_platform.auth import TokenVerifier
from tienda_platform.errors import AlreadyExists, InvalidArgument, Unauthenticated

from .fakes import FakePasswordHasher, FakeUnitOfWork

pytestmark = pytest.mark.unit

PASSWORD = "correct-horse-42"


async def test_register_creates_a_customer_with_a_normalised_email(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    user = await services.register(
        deps=deps, email=" Ada@Example.COM ", password=PASSWORD, full_name=" Ada Lovelace "
    )
    assert (user.email, user.full_name, user.role) == (
        "ada@example.com",
        "Ada Lovelace",
        Role.CUSTOMER,
    )
    stored = uow.users.rows[user.id]
    assert stored.password_hash == f"fake${PASSWORD}"
    assert stored.create_time == stored.update_time


async def test_register_refuses_an_email_that_differs_only_in_case(deps: Dependencies) -> None:
    await services.register(deps=deps, email="ada@example.com", password=PASSWORD, full_name="Ada")
    with pytest.raises(AlreadyExists):
        await services.register(
            deps=deps, email="ADA@example.com ", password=PASSWORD, full_name="Ada"
        )


async def test_register_reports_every_invalid_field(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await services.register(deps=deps, email="x" * 1_000_000, password="short", full_name="")
    assert {v.field for v in raised.value.violations} == {"email", "password", "full_name"}
    assert uow.users.rows == {}


async def test_register_refuses_the_email_as_password(deps: Dependencies) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await services.register(
            deps=deps, email="ada1@example.com", password="ADA1@example.com", full_name="Ada"
        )
    assert [v.field for v in raised.value.violations] == ["password"]


async def test_login_issues_tokens_that_tienda_services_accept(
    deps: Dependencies, verifier: TokenVerifier
) -> None:
    user = await services.register(
        deps=deps, email="ada@example.com", password=PASSWORD, full_name="Ada"
    )
    tokens = await services.login(deps=deps, email=" ADA@example.com", password=PASSWORD)
    principal = await verifier.verify(tokens.access_token)
    assert (principal.user_id, principal.role) == (user.id, "customer")
    assert tokens.refresh_token.startswith("rt_")
    assert tokens.expires_in == 900
    claims = jwt.decode(tokens.access_token, options={"verify_signature": False})
    assert set(claims) == {"sub", "role", "typ", "iss", "aud", "iat", "exp", "jti"}
    assert claims["typ"] == "access" and claims["exp"] - claims["iat"] == 900


async def test_wrong_password_and_unknown_email_fail_alike(
    deps: Dependencies, passwords: FakePasswordHasher
) -> None:
    await services.register(deps=deps, email="ada@example.com", password=PASSWORD, full_name="Ada")
    with pytest.raises(Unauthenticated) as wrong_password:
        await services.login(deps=deps, email="ada@example.com", password="wrong-password-1")
    with pytest.raises(Unauthenticated) as unknown_email:
        await services.login(deps=deps, email="bob@example.com", password=PASSWORD)
    assert (
        wrong_password.value.message == unknown_email.value.message == "invalid email or password"
    )
    # The unknown email was still checked against a (dummy) hash, so it takes as long.
    assert passwords.verified == [f"fake${PASSWORD}", None]


@pytest.mark.parametrize(
    ("email", "password", "field"),
    [
        ("", PASSWORD, "email"),
        ("ada@example.com", "", "password"),
        ("a" * 1_000_000, PASSWORD, "email"),
        ("ada@example.com", "p1" * 500_000, "password"),
    ],
)
async def test_login_refuses_missing_or_huge_fields(
    deps: Dependencies, email: str, password: str, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await services.login(deps=deps, email=email, password=password)
    assert [v.field for v in raised.value.violations] == [field]


async def test_login_rehashes_a_password_hashed_with_old_parameters(
    deps: Dependencies, uow: FakeUnitOfWork
) -> None:
    user = await services.register(
        deps=deps, email="ada@example.com", password=PASSWORD, full_name="Ada"
    )
    uow.users.rows[user.id].password_hash = f"weaker${PASSWORD}"
    await services.login(deps=deps, email="ada@example.com", password=PASSWORD)
    assert uow.users.rows[user.id].password_hash == f"fake${PASSWORD}"
