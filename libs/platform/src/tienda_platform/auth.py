"""Access-token verification from a JWKS, and the principal of the current RPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import jwt

from tienda_platform.errors import PermissionDenied, Unauthenticated

ALGORITHM = "EdDSA"
ROLE_ADMIN = "admin"
ROLE_CUSTOMER = "customer"
# Another tienda service, authenticated by client credentials (AuthService/IssueServiceToken).
ROLE_SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    """Who is calling: taken from a verified access token."""

    user_id: str
    role: str
    token: str

    @property
    def is_admin(self) -> bool:
        return self.role == ROLE_ADMIN

    @property
    def is_service(self) -> bool:
        return self.role == ROLE_SERVICE


_principal: ContextVar[Principal | None] = ContextVar("tienda_principal", default=None)


@contextmanager
def bind_principal(principal: Principal) -> Iterator[None]:
    reset = _principal.set(principal)
    try:
        yield
    finally:
        _principal.reset(reset)


def current_principal() -> Principal:
    """The caller of the current RPC; raises Unauthenticated when there is none."""
    principal = _principal.get()
    if principal is None:
        raise Unauthenticated("missing bearer token")
    return principal


def optional_principal() -> Principal | None:
    return _principal.get()


def require_admin() -> Principal:
    """The caller, who must be an admin."""
    principal = current_principal()
    if not principal.is_admin:
        raise PermissionDenied("admin role required")
    return principal


def require_service() -> Principal:
    """The caller, who must be another tienda service."""
    principal = current_principal()
    if not principal.is_service:
        raise PermissionDenied("internal method: service credentials required")
    return principal


JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


class JwksKeySource:
    """Caches the signing keys of a JWKS; refetches on an unknown kid, at most every few seconds."""

    def __init__(self, fetch: JwksFetcher, *, ttl: float = 300.0, min_refresh: float = 5.0) -> None:
        self._fetch = fetch
        self._ttl = ttl
        self._min_refresh = min_refresh
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def key_for(self, kid: str) -> Any | None:
        now = time.monotonic()
        stale = now - self._fetched_at > self._ttl
        unknown = kid not in self._keys and now - self._fetched_at > self._min_refresh
        if stale or unknown:
            await self._refresh()
        return self._keys.get(kid)

    async def _refresh(self) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at <= self._min_refresh:
                return
            try:
                jwks = await self._fetch()
            except Exception as error:
                if not self._keys:
                    raise Unauthenticated(
                        "cannot verify tokens: signing keys unavailable"
                    ) from error
                return  # keep serving with the keys we have
            key_set = jwt.PyJWKSet.from_dict(jwks)
            self._keys = {k.key_id: k.key for k in key_set.keys if k.key_id}
            self._fetched_at = time.monotonic()


class TokenVerifier:
    """Verifies EdDSA access tokens: signature, kid, expiry, issuer, audience and type.

    A token is checked in full once: the same token (byte for byte, signature included) is
    then taken from a bounded cache until it expires or its signing key leaves the JWKS. An
    order's calls carry the same few tokens from service to service, and a full check (the
    signature above all) costs more than most of the handlers it guards. A cache_size of 0
    turns the cache off."""

    def __init__(
        self, keys: JwksKeySource, *, issuer: str, audience: str, cache_size: int = 4096
    ) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._cache_size = cache_size
        # token -> (its principal, its expiry as a Unix time, its kid, the key of that kid)
        self._verified: dict[str, tuple[Principal, float, str, Any]] = {}

    async def verify(self, token: str) -> Principal:
        if len(token) > 4096:
            raise Unauthenticated("invalid token")
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires, kid, key = cached
            if time.time() < expires and await self._keys.key_for(kid) is key:
                return principal
            del self._verified[token]  # and checked in full below, which says what is wrong
        verified = await self._verify(token)
        if self._cache_size <= 0:  # caching turned off: every token is checked in full
            return verified[0]
        if len(self._verified) >= self._cache_size:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = verified
        return verified[0]

    async def _verify(self, token: str) -> tuple[Principal, float, str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("malformed token") from None
        if header.get("alg") != ALGORITHM:
            raise Unauthenticated("unsupported token algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise Unauthenticated("token has no key id")
        key = await self._keys.key_for(kid)
        if key is None:
            raise Unauthenticated("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.PyJWTError:
            raise Unauthenticated("invalid token") from None
        if claims.get("typ") != "access" or claims.get("role") not in (
            ROLE_ADMIN,
            ROLE_CUSTOMER,
            ROLE_SERVICE,
        ):
            raise Unauthenticated("invalid token")
        principal = Principal(user_id=str(claims["sub"]), role=str(claims["role"]), token=token)
        return principal, float(claims["exp"]), kid, key


def grpc_jwks_fetcher(target: str, *, timeout: float = 3.0) -> JwksFetcher:
    """Fetch the JWKS from auth_service's GetJwks RPC."""
    import grpc
    from auth.v1 import auth_pb2, auth_pb2_grpc
    from google.protobuf.json_format import MessageToDict

    channel: grpc.aio.Channel | None = None

    async def fetch() -> dict[str, Any]:
        nonlocal channel
        if channel is None:
            channel = grpc.aio.insecure_channel(target)
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        jwks = await stub.GetJwks(auth_pb2.GetJwksRequest(), timeout=timeout)
        return MessageToDict(jwks, preserving_proto_field_name=True)

    return fetch


class ServiceTokenSource:
    """This service's own access token, from AuthService/IssueServiceToken, renewed before expiry."""

    def __init__(
        self, *, target: str, client_id: str, client_secret: str, timeout: float = 3.0
    ) -> None:
        self._target = target
        self._client_id = client_id
        self._client_secret = client_secret
        self._timeout = timeout
        self._token = ""
        self._renew_at = 0.0
        self._lock = asyncio.Lock()

    async def token(self) -> str:
        if time.monotonic() < self._renew_at:
            return self._token
        async with self._lock:
            if time.monotonic() >= self._renew_at:
                await self._renew()
        return self._token

    async def _renew(self) -> None:
        import grpc
        from auth.v1 import auth_pb2, auth_pb2_grpc

        from tienda_platform.grpc_client import create_channel

        async with create_channel(self._target) as channel:
            try:
                reply = await auth_pb2_grpc.AuthServiceStub(channel).IssueServiceToken(
                    auth_pb2.IssueServiceTokenRequest(
                        client_id=self._client_id, client_secret=self._client_secret
                    ),
                    timeout=self._timeout,
                )
            except grpc.aio.AioRpcError as error:
                from tienda_platform.errors import Unavailable

                raise Unavailable(f"cannot obtain a service token: {error.code().name}") from None
        self._token = reply.access_token
        self._renew_at = time.monotonic() + max(1.0, reply.expires_in * 0.8)
