"""IssueServiceToken over real gRPC: no access token needed, one answer for bad credentials, and
tokens every tienda service accepts as role "service"."""

from __future__ import annotations

import grpc
import pytest
from auth.v1 import auth_pb2, auth_pb2_grpc
from auth_service.bootstrap import AuthApp
from tienda_platform.auth import JwksKeySource, TokenVerifier, grpc_jwks_fetcher
from tienda_platform.grpc_client import bearer

from .conftest import SERVICE_SECRETS

pytestmark = pytest.mark.integration


def _request(client_id: str, client_secret: str) -> auth_pb2.IssueServiceTokenRequest:
    return auth_pb2.IssueServiceTokenRequest(client_id=client_id, client_secret=client_secret)


async def test_a_configured_service_gets_a_token_other_services_accept(
    stub: auth_pb2_grpc.AuthServiceStub, app: AuthApp
) -> None:
    reply = await stub.IssueServiceToken(
        _request("order_service", SERVICE_SECRETS["order_service"])
    )
    assert (reply.token_type, reply.expires_in, reply.refresh_token) == ("Bearer", 900, "")
    verifier = TokenVerifier(
        JwksKeySource(grpc_jwks_fetcher(f"127.0.0.1:{app.server.bound_port}")),
        issuer=app.settings.jwt_issuer,
        audience=app.settings.jwt_audience,
    )
    principal = await verifier.verify(reply.access_token)
    assert (principal.user_id, principal.role) == ("service:order_service", "service")
    # It names no user, so the caller's-own-account RPCs refuse it.
    for call in (
        stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=bearer(reply.access_token)),
        stub.DeleteCurrentUser(
            auth_pb2.DeleteCurrentUserRequest(), metadata=bearer(reply.access_token)
        ),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [
        ("order_service", SERVICE_SECRETS["product_service"]),
        ("order_service", SERVICE_SECRETS["order_service"] + "x"),
        ("gateway", SERVICE_SECRETS["order_service"]),
    ],
    ids=["another client's secret", "wrong secret", "unknown client"],
)
async def test_wrong_or_unknown_credentials_are_unauthenticated(
    stub: auth_pb2_grpc.AuthServiceStub, client_id: str, client_secret: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.IssueServiceToken(_request(client_id, client_secret))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == "invalid client credentials"


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [("", ""), ("x" * 1_000_000, "s"), ("order_service", "s" * 1_000_000)],
    ids=["empty", "1 MB id", "1 MB secret"],
)
async def test_missing_or_huge_credentials_are_invalid_arguments(
    stub: auth_pb2_grpc.AuthServiceStub, client_id: str, client_secret: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.IssueServiceToken(_request(client_id, client_secret))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
