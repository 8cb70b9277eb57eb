"""The AuthService gRPC servicer: proto in, service layer, proto out."""

from __future__ import annotations

from datetime import datetime

from auth.v1 import auth_pb2, auth_pb2_grpc
from google.protobuf import empty_pb2, timestamp_pb2
from grpc import aio
from tienda_platform.auth import current_principal
from tienda_platform.errors import PermissionDenied

from auth_service.domain.model import IssuedTokens, Role, ServiceToken, User
from auth_service.service_layer import service_tokens, services, signing_keys
from auth_service.service_layer.services import Dependencies

SERVICE_NAME = auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name
# Everything else needs a valid access token.
PUBLIC_METHODS = frozenset(
    f"/{SERVICE_NAME}/{method}"
    for method in ("Register", "Login", "RefreshToken", "GetJwks", "IssueServiceToken")
)

_ROLES = {Role.CUSTOMER: auth_pb2.ROLE_CUSTOMER, Role.ADMIN: auth_pb2.ROLE_ADMIN}


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(value)
    return stamp


def user_to_proto(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        id=user.id,
        email=user.email,
        full_name=user.full_name,
        role=_ROLES[user.role],
        create_time=_timestamp(user.create_time),
        update_time=_timestamp(user.update_time),
    )


def tokens_to_proto(tokens: IssuedTokens | ServiceToken) -> auth_pb2.TokenResponse:
    return auth_pb2.TokenResponse(
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token if isinstance(tokens, IssuedTokens) else "",
        token_type="Bearer",
        expires_in=tokens.expires_in,
    )


def _calling_user_id() -> str:
    """The id of the user calling; a service token acts for no user."""
    principal = current_principal()
    if principal.is_service:
        raise PermissionDenied("a service token acts for no user")
    return principal.user_id


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, deps: Dependencies) -> None:
        self._deps = deps

    async def Register(
        self, request: auth_pb2.RegisterRequest, context: aio.ServicerContext
    ) -> auth_pb2.User:
        user = await services.register(
            deps=self._deps,
            email=request.email,
            password=request.password,
            full_name=request.full_name,
        )
        return user_to_proto(user)

    async def Login(
        self, request: auth_pb2.LoginRequest, context: aio.ServicerContext
    ) -> auth_pb2.TokenResponse:
        tokens = await services.login(
            deps=self._deps, email=request.email, password=request.password
        )
        return tokens_to_proto(tokens)

    async def RefreshToken(
        self, request: auth_pb2.RefreshTokenRequest, context: aio.ServicerContext
    ) -> auth_pb2.TokenResponse:
        tokens = await services.refresh(deps=self._deps, refresh_token=request.refresh_token)
        return tokens_to_proto(tokens)

    async def GetCurrentUser(
        self, request: auth_pb2.GetCurrentUserRequest, context: aio.ServicerContext
    ) -> auth_pb2.User:
        user = await services.get_current_user(deps=self._deps, user_id=_calling_user_id())
        return user_to_proto(user)

    async def UpdateCurrentUser(
        self, request: auth_pb2.UpdateCurrentUserRequest, context: aio.ServicerContext
    ) -> auth_pb2.User:
        user = await services.update_current_user(
            deps=self._deps,
            user_id=_calling_user_id(),
            full_name=request.full_name if request.HasField("full_name") else None,
            password=request.password if request.HasField("password") else None,
            current_password=(
                request.current_password if request.HasField("current_password") else None
            ),
        )
        return user_to_proto(user)

    async def DeleteCurrentUser(
        self, request: auth_pb2.DeleteCurrentUserRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await services.delete_current_user(deps=self._deps, user_id=_calling_user_id())
        return empty_pb2.Empty()

    async def GetJwks(
        self, request: auth_pb2.GetJwksRequest, context: aio.ServicerContext
    ) -> auth_pb2.Jwks:
        keys = await signing_keys.get_jwks(deps=self._deps)
        return auth_pb2.Jwks(keys=[auth_pb2.Jwk(**key) for key in keys])

    async def GetUser(
        self, request: auth_pb2.GetUserRequest, context: aio.ServicerContext
    ) -> auth_pb2.User:
        user = await services.get_user(
            deps=self._deps, caller=current_principal(), user_id=request.id
        )
        return user_to_proto(user)

    async def IssueServiceToken(
        self, request: auth_pb2.IssueServiceTokenRequest, context: aio.ServicerContext
    ) -> auth_pb2.TokenResponse:
        token = await service_tokens.issue_service_token(
            deps=self._deps, client_id=request.client_id, client_secret=request.client_secret
        )
        return tokens_to_proto(token)
