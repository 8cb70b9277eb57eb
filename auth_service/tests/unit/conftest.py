"""Fixtures over the in-memory fakes."""

from __future__ import annotations

import pytest
from auth_service.service_layer import signing_keys
from auth_service.service_layer.services import Dependencies
from tienda_platform.auth import JwksKeySource, TokenVerifier
from tienda_platform.testing import TEST_AUDIENCE, TEST_ISSUER

from .fakes import FakeClock, FakePasswordHasher, FakeUnitOfWork, fake_dependencies


@pytest.fixture
def uow() -> FakeUnitOfWork:
    return FakeUnitOfWork()


@pytest.fixture
def passwords() -> FakePasswordHasher:
    return FakePasswordHasher()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def deps(
    uow: FakeUnitOfWork, passwords: FakePasswordHasher, clock: FakeClock
) -> Dependencies:
    deps = fake_dependencies(uow, passwords, clock)
    await signing_keys.ensure_signing_key(deps=deps)
    return deps


@pytest.fixture
def verifier(deps: Dependencies) -> TokenVerifier:
    """Verifies tokens the way every tienda service does, from this service's JWKS."""

    async def fetch() -> dict[str, object]:
        return {"keys": await signing_keys.get_jwks(deps=deps)}

    # min_refresh=0 so a rotated key is picked up at once.
    return TokenVerifier(
        JwksKeySource(fetch, min_refresh=0.0), issuer=TEST_ISSUER, audience=TEST_AUDIENCE
    )
