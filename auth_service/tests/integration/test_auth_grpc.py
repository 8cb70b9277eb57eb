"""AuthService over real gRPC: a grpc.aio server on a free port, called with the generated stub."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import jwt
import pytest
from auth.v1 import auth_pb2, auth_pb2_grpc
from auth_service.adapters.signing import sign_token
from auth_service.bootstrap import AuthApp, bootstrap
from auth_service.config import Settings
from auth_service.service_layer import signing_keys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tienda_platform.auth import JwksKeySource, TokenVerifier, grpc_jwks_fetcher
from tienda_platform.grpc_client import bearer
from tienda_platform.ids import new_id

pytestmark = pytest.mark.integration

PASSWORD = "correct-horse-42"


def _violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of an error."""
    raw = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    fields = []
    for detail in status_pb2.Status.FromString(raw).details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


async def _register_and_login(
    stub: auth_pb2_grpc.AuthServiceStub, email: str = "ada@example.com"
) -> tuple[auth_pb2.User, auth_pb2.TokenResponse]:
    user = await stub.Register(
        auth_pb2.RegisterRequest(email=email, password=PASSWORD, full_name="Ada Lovelace")
    )
    tokens = await stub.Login(auth_pb2.LoginRequest(email=email, password=PASSWORD))
    return user, tokens


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value.code()


async def test_session_lifecycle_with_reuse_detection(
    stub: auth_pb2_grpc.AuthServiceStub, app: AuthApp
) -> None:
    user = await stub.Register(
        auth_pb2.RegisterRequest(
            email=" Ada@Example.com ", password=PASSWORD, full_name="Ada Lovelace"
        )
    )
    assert (user.email, user.role) == ("ada@example.com", auth_pb2.ROLE_CUSTOMER)
    assert user.create_time.seconds > 0 and user.update_time == user.create_time

    login = await stub.Login(auth_pb2.LoginRequest(email="ada@example.com", password=PASSWORD))
    assert (login.token_type, login.expires_in) == ("Bearer", 900)
    me = await stub.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(login.access_token)
    )
    assert me == user

    # Any tienda service verifies these tokens from GetJwks.
    target = f"127.0.0.1:{app.server.bound_port}"
    verifier = TokenVerifier(
        JwksKeySource(grpc_jwks_fetcher(target)),
        issuer=app.settings.jwt_issuer,
        audience=app.settings.jwt_audience,
    )
    principal = await verifier.verify(login.access_token)
    assert (principal.user_id, principal.role) == (user.id, "customer")

    refreshed = await stub.RefreshToken(
        auth_pb2.RefreshTokenRequest(refresh_token=login.refresh_token)
    )
    assert refreshed.refresh_token != login.refresh_token
    assert (await verifier.verify(refreshed.access_token)).user_id == user.id

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=login.refresh_token))
    assert reused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert reused.value.details() == "refresh token reused"
    # The replay revoked the whole family, including the token issued by the honest refresh.
    with pytest.raises(grpc.aio.AioRpcError) as revoked:
        await stub.RefreshToken(auth_pb2.RefreshTokenRequest(refresh_token=refreshed.refresh_token))
    assert revoked.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_reads_answer_while_a_writer_holds_the_database(
    stub: auth_pb2_grpc.AuthServiceStub, app: AuthApp
) -> None:
    user = await stub.Register(
        auth_pb2.RegisterRequest(email="grace@example.com", password=PASSWORD, full_name="Grace")
    )
    login = await stub.Login(auth_pb2.LoginRequest(email=user.email, password=PASSWORD))
    async with app.deps.uow() as uow:
        # a command's unit of work: on SQLite it holds the write lock from its first statement
        # (BEGIN IMMEDIATE) until it ends; profile and JWKS reads must not wait for it
        await uow.users.get(user.id)
        me = await asyncio.wait_for(
            stub.GetCurrentUser(
                auth_pb2.GetCurrentUserRequest(), metadata=bearer(login.access_token)
            ),
            timeout=5,
        )
        jwks = await asyncio.wait_for(stub.GetJwks(auth_pb2.GetJwksRequest()), timeout=5)
    assert me == user
    assert len(jwks.keys) >= 1


async def test_wrong_credentials_are_unauthenticated_with_one_message(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    await _register_and_login(stub)
    details = set()
    for email, password in [("ada@example.com", "wrong-password-1"), ("bob@example.com", PASSWORD)]:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Login(auth_pb2.LoginRequest(email=email, password=password))
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
        details.add(raised.value.details())
    assert details == {"invalid email or password"}


async def test_a_taken_email_already_exists(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    await _register_and_login(stub)
    request = auth_pb2.RegisterRequest(email="ADA@example.com", password=PASSWORD, full_name="A")
    assert await _code(stub.Register(request)) == grpc.StatusCode.ALREADY_EXISTS


async def test_a_one_megabyte_email_is_an_invalid_argument(
    stub: auth_pb2_grpc.AuthServiceStub,
) -> None:
    huge = "a" * 1_000_000 + "@example.com"
    for call in (
        stub.Register(auth_pb2.RegisterRequest(email=huge, password=PASSWORD, full_name="Ada")),
        stub.Login(auth_pb2.LoginRequest(email=huge, password=PASSWORD)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert _violations(raised.value) == ["email"]


async def _forged_tokens(app: AuthApp, user_id: str) -> dict[str, str]:
    key = await signing_keys.ensure_signing_key(deps=app.deps)
    now = int(time.time())
    claims = {
        "sub": user_id,
        "role": "admin",
        "typ": "access",
        "iss": app.settings.jwt_issuer,
        "aud": app.settings.jwt_audience,
        "iat": now,
        "exp": now + 300,
        "jti": new_id(),
    }
    expired = {**claims, "iat": now - 1000, "exp": now - 100}
    return {
        "expired": sign_token(key=key, claims=expired),
        "foreign key, same kid": jwt.encode(
            claims, Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": key.kid}
        ),
        "alg none": jwt.encode(
            claims,
            None,  # type: ignore[arg-type]  # an unsigned token is the point
            algorithm="none",
            headers={"kid": key.kid},
        ),
        "refresh typ": sign_token(key=key, claims={**claims, "typ": "refresh"}),
        "other audience": sign_token(key=key, claims={**claims, "aud": "elsewhere"}),
        "garbage": "not.a.jwt",
    }


async def test_bad_access_tokens_are_unauthenticated(
    stub: auth_pb2_grpc.AuthServiceStub, app: AuthApp
) -> None:
    user, login = await _register_and_login(stub)
    request = auth_pb2.GetCurrentUserRequest()
    assert await stub.GetCurrentUser(request, metadata=bearer(login.access_token)) == user
    assert await _code(stub.GetCurrentUser(request)) == grpc.StatusCode.UNAUTHENTICATED
    for name, token in (await _forged_tokens(app, user.id)).items():
        code = await _code(stub.GetCurrentUser(request, metadata=bearer(token)))
        assert code == grpc.StatusCode.UNAUTHENTICATED, name


async def test_get_user_is_for_admins_and_the_user_themself(
    stub: auth_pb2_grpc.AuthServiceStub, admin_credentials: tuple[str, str]
) -> None:
    ada, ada_login = await _register_and_login(stub)
    bob, bob_login = await _register_and_login(stub, "bob@example.com")
    email, password = admin_credentials
    admin_login = await stub.Login(auth_pb2.LoginRequest(email=email, password=password))

    async def get(user_id: str, token: str) -> Any:
        return await stub.GetUser(auth_pb2.GetUserRequest(id=user_id), metadata=bearer(token))

    assert await get(ada.id, ada_login.access_token) == ada
    assert await get(ada.id, admin_login.access_token) == ada
    assert await _code(get(ada.id, bob_login.access_token)) == grpc.StatusCode.PERMISSION_DENIED
    assert await _code(get(new_id(), admin_login.access_token)) == grpc.StatusCode.NOT_FOUND
    for bad in ("", "123", "x" * 1_000_000):
        assert await _code(get(bad, admin_login.access_token)) == grpc.StatusCode.INVALID_ARGUMENT
    admin = await stub.GetCurrentUser(
        auth_pb2.GetCurrentUserRequest(), metadata=bearer(admin_login.access_token)
    )
    assert (admin.email, admin.role) == (email, auth_pb2.ROLE_ADMIN)
    assert bob.role == auth_pb2.ROLE_CUSTOMER


async def test_update_and_delete_the_current_user(stub: auth_pb2_grpc.AuthServiceStub) -> None:
    _, login = await _register_and_login(stub)
    auth = bearer(login.access_token)
    renamed = await stub.UpdateCurrentUser(
        auth_pb2.UpdateCurrentUserRequest(full_name="Ada King"), metadata=auth
    )
    assert renamed.full_name == "Ada King"
    without_current = auth_pb2.UpdateCurrentUserRequest(password="new-password-7")
    assert (
        await _code(stub.UpdateCurrentUser(without_current, metadata=auth))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    await stub.UpdateCurrentUser(
        auth_pb2.UpdateCurrentUserRequest(password="new-password-7", current_password=PASSWORD),
        metadata=auth,
    )
    relogin = await stub.Login(
        auth_pb2.LoginRequest(email="ada@example.com", password="new-password-7")
    )

    await stub.DeleteCurrentUser(auth_pb2.DeleteCurrentUserRequest(), metadata=auth)
    assert (
        await _code(stub.GetCurrentUser(auth_pb2.GetCurrentUserRequest(), metadata=auth))
        == grpc.StatusCode.UNAUTHENTICATED
    )
    refresh = auth_pb2.RefreshTokenRequest(refresh_token=relogin.refresh_token)
    assert await _code(stub.RefreshToken(refresh)) == grpc.StatusCode.UNAUTHENTICATED
    login_again = auth_pb2.LoginRequest(email="ada@example.com", password="new-password-7")
    assert await _code(stub.Login(login_again)) == grpc.StatusCode.UNAUTHENTICATED


async def test_jwks_lists_public_keys_only(
    stub: auth_pb2_grpc.AuthServiceStub, app: AuthApp
) -> None:
    old = await signing_keys.ensure_signing_key(deps=app.deps)
    new = await signing_keys.rotate_signing_key(deps=app.deps)
    jwks = await stub.GetJwks(auth_pb2.GetJwksRequest())
    assert [k.kid for k in jwks.keys] == [old.kid, new.kid]
    for key in jwks.keys:
        assert (key.kty, key.crv, key.alg, key.use) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert "PRIVATE" not in str(jwks) and '"d"' not in str(jwks)


async def test_health_is_not_serving_until_prepared(settings: Settings) -> None:
    app = bootstrap(settings=settings)
    await app.server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.server.bound_port}")
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service="auth.v1.AuthService")
    try:
        before = await health.Check(request)
        assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
        await app.prepare()
        await app.server.mark_serving()
        after = await health.Check(request)
        assert after.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await channel.close()
        await app.server.stop()
        await app.close()
