"""IssueServiceToken over fakes: client credentials for other tienda services."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest
from auth_service.domain.model import ServiceClients
from auth_service.service_layer import service_tokens
from auth_service.service_layer.services import Dependencies
from loguru import logger
from tienda_platform.auth import TokenVerifier
from tienda_platform.errors import InvalidArgument, Unauthenticated

from .fakes import SERVICE_SECRETS

pytestmark = pytest.mark.unit

ORDER_SECRET = SERVICE_SECRETS["order_service"]


@pytest.fixture
def logs() -> Iterator[list[str]]:
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(f"{m.record['message']} {m.record['extra']}"))
    yield lines
    logger.remove(sink)


async def test_a_configured_client_gets_a_service_token(
    deps: Dependencies, verifier: TokenVerifier
) -> None:
    token = await service_tokens.issue_service_token(
        deps=deps, client_id="order_service", client_secret=ORDER_SECRET
    )
    principal = await verifier.verify(token.access_token)
    assert (principal.user_id, principal.role, principal.is_service) == (
        "service:order_service",
        "service",
        True,
    )
    claims = jwt.decode(token.access_token, options={"verify_signature": False})
    assert set(claims) == {"sub", "role", "typ", "iss", "aud", "iat", "exp", "jti"}
    assert claims["typ"] == "access" and claims["exp"] - claims["iat"] == token.expires_in == 900


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [
        ("order_service", ORDER_SECRET[:-1] + "x"),
        ("order_service", ORDER_SECRET[:-1]),
        ("order_service", SERVICE_SECRETS["product_service"]),
        ("gateway", ORDER_SECRET),
        ("Order_service", ORDER_SECRET),
    ],
    ids=["wrong last character", "prefix", "another client's secret", "unknown", "case"],
)
async def test_wrong_or_unknown_credentials_are_refused_alike(
    deps: Dependencies, client_id: str, client_secret: str, logs: list[str]
) -> None:
    with pytest.raises(Unauthenticated) as raised:
        await service_tokens.issue_service_token(
            deps=deps, client_id=client_id, client_secret=client_secret
        )
    assert raised.value.message == "invalid client credentials"
    assert not any(client_secret in line for line in logs)


async def test_an_unknown_client_id_is_not_logged(deps: Dependencies, logs: list[str]) -> None:
    pasted = "s3cr3t-in-the-wrong-field"
    with pytest.raises(Unauthenticated):
        await service_tokens.issue_service_token(
            deps=deps, client_id=pasted, client_secret=ORDER_SECRET
        )
    assert any("service token refused" in line for line in logs)
    assert not any(pasted in line for line in logs)


@pytest.mark.parametrize(
    ("client_id", "client_secret", "fields"),
    [
        ("", "", {"client_id", "client_secret"}),
        ("x" * 1_000_000, ORDER_SECRET, {"client_id"}),
        ("order_service", "x" * 1_000_000, {"client_secret"}),
    ],
)
async def test_missing_or_huge_credentials_are_invalid_arguments(
    deps: Dependencies, client_id: str, client_secret: str, fields: set[str]
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await service_tokens.issue_service_token(
            deps=deps, client_id=client_id, client_secret=client_secret
        )
    assert {v.field for v in raised.value.violations} == fields


async def test_no_client_is_accepted_when_none_is_configured() -> None:
    assert not ServiceClients().authenticate("order_service", ORDER_SECRET)
    assert not ServiceClients().authenticate("", "")


def test_client_secrets_are_kept_only_as_digests() -> None:
    clients = ServiceClients.from_secrets(SERVICE_SECRETS)
    assert clients.authenticate("order_service", ORDER_SECRET)
    assert ORDER_SECRET not in repr(clients)
    assert all(ORDER_SECRET.encode() not in digest for digest in clients.digests.values())
