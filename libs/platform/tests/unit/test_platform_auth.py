"""Token verification: what is accepted and every way a token is refused."""

from __future__ import annotations

import datetime
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tienda_platform.auth import JwksKeySource, TokenVerifier
from tienda_platform.errors import Unauthenticated
from tienda_platform.testing import TokenMint

pytestmark = pytest.mark.unit


async def test_a_valid_token_gives_its_principal(token_mint: TokenMint) -> None:
    token = token_mint.token("user-1", "admin")
    principal = await token_mint.verifier().verify(token)
    assert (principal.user_id, principal.role, principal.is_admin) == ("user-1", "admin", True)
    assert principal.token == token


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda m: m.token("u", ttl=-10), "token expired"),
        (lambda m: m.token("u", role="root"), "invalid token"),
        (lambda m: m.token("u", typ="refresh"), "invalid token"),
        (lambda m: m.token("u", aud="someone-else"), "invalid token"),
        (lambda m: m.token("u", iss="evil"), "invalid token"),
        (lambda m: "garbage", "malformed token"),
        (lambda m: m.token("u") + "tampered", "(invalid|malformed) token"),
    ],
)
async def test_bad_tokens_are_refused(token_mint: TokenMint, make_token: Any, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        await token_mint.verifier().verify(make_token(token_mint))


async def test_a_token_signed_by_another_key_with_our_kid_is_refused(token_mint: TokenMint) -> None:
    impostor = TokenMint(Ed25519PrivateKey.generate(), kid=token_mint.kid)
    with pytest.raises(Unauthenticated, match="invalid token"):
        await token_mint.verifier().verify(impostor.token("u"))


async def test_alg_none_and_hmac_tokens_are_refused(token_mint: TokenMint) -> None:
    claims = {
        "sub": "u",
        "role": "admin",
        "typ": "access",
        "iss": "tienda-auth",
        "aud": "tienda",
        "iat": int(time.time()),
        "exp": int(time.time()) + 60,
    }
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "kid": token_mint.kid}).encode())
    payload = jwt.utils.base64url_encode(json.dumps(claims).encode())
    unsigned = f"{header.decode()}.{payload.decode()}."
    hmac = jwt.encode(claims, "secret" * 8, algorithm="HS256", headers={"kid": token_mint.kid})
    for token in (unsigned, hmac):
        with pytest.raises(Unauthenticated, match="unsupported token algorithm"):
            await token_mint.verifier().verify(token)


async def test_unknown_kid_refetches_the_jwks_once_then_refuses(token_mint: TokenMint) -> None:
    calls = 0

    async def fetch() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return token_mint.jwks()

    verifier = TokenVerifier(
        JwksKeySource(fetch, min_refresh=60), issuer="tienda-auth", audience="tienda"
    )
    await verifier.verify(token_mint.token("u"))
    stranger = TokenMint(Ed25519PrivateKey.generate(), kid="rotated-away")
    for _ in range(3):
        with pytest.raises(Unauthenticated, match="unknown key"):
            await verifier.verify(stranger.token("u"))
    assert calls == 1  # refetching is rate limited, so unknown kids cannot hammer auth_service


async def test_a_rotated_key_is_picked_up(token_mint: TokenMint) -> None:
    rotated = TokenMint(Ed25519PrivateKey.generate(), kid="new-key")
    current = token_mint

    async def fetch() -> dict[str, Any]:
        return current.jwks()

    verifier = TokenVerifier(
        JwksKeySource(fetch, min_refresh=0), issuer="tienda-auth", audience="tienda"
    )
    await verifier.verify(token_mint.token("u"))
    current = rotated
    assert (await verifier.verify(rotated.token("v"))).user_id == "v"


async def test_jwks_unreachable_at_first_use_is_unauthenticated() -> None:
    async def fetch() -> dict[str, Any]:
        raise ConnectionError("auth_service down")

    verifier = TokenVerifier(JwksKeySource(fetch), issuer="tienda-auth", audience="tienda")
    mint = TokenMint(Ed25519PrivateKey.generate(), kid="k")
    with pytest.raises(Unauthenticated, match="signing keys unavailable"):
        await verifier.verify(mint.token("u"))


@pytest.fixture
def decoded(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The tokens checked in full (their signature verified by jwt.decode), in order."""
    tokens: list[str] = []
    decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        tokens.append(token)
        return decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    return tokens


async def test_a_token_is_checked_in_full_once_then_taken_from_the_cache(
    token_mint: TokenMint, decoded: list[str]
) -> None:
    verifier = token_mint.verifier()
    alice, bob = token_mint.token("alice"), token_mint.token("bob", "admin")
    for _ in range(3):
        assert (await verifier.verify(alice)).user_id == "alice"
        assert (await verifier.verify(bob)).is_admin
    assert decoded == [alice, bob]
    # a token that differs from a cached one in its signature alone is checked, and refused
    forged = alice[:-4] + ("AAAA" if not alice.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="invalid token"):
        await verifier.verify(forged)


async def test_a_cached_token_still_expires(
    token_mint: TokenMint, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = token_mint.verifier()
    token = token_mint.token("u", ttl=60)
    await verifier.verify(token)
    later = time.time() + 61

    class Later(datetime.datetime):
        @classmethod
        def now(cls, tz: datetime.tzinfo | None = None) -> Later:
            return cls.fromtimestamp(later, tz)

    # a minute on, for the cache and for PyJWT alike
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    with pytest.raises(Unauthenticated, match="token expired"):
        await verifier.verify(token)


async def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks(
    token_mint: TokenMint,
) -> None:
    current: dict[str, Any] = token_mint.jwks()

    async def fetch() -> dict[str, Any]:
        return current

    keys = JwksKeySource(fetch, ttl=0, min_refresh=0)  # refetched at every use
    verifier = TokenVerifier(keys, issuer="tienda-auth", audience="tienda")
    token = token_mint.token("u")
    await verifier.verify(token)
    current = TokenMint(Ed25519PrivateKey.generate(), kid="the-next-key").jwks()
    with pytest.raises(Unauthenticated, match="unknown key"):
        await verifier.verify(token)


async def test_the_cache_keeps_at_most_its_size(token_mint: TokenMint) -> None:
    verifier = TokenVerifier(
        token_mint.verifier()._keys, issuer="tienda-auth", audience="tienda", cache_size=2
    )
    tokens = [token_mint.token(f"user-{i}") for i in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._verified) == tokens[-2:]


async def test_a_cache_size_of_zero_checks_every_token_in_full(
    token_mint: TokenMint, decoded: list[str]
) -> None:
    verifier = TokenVerifier(
        token_mint.verifier()._keys, issuer="tienda-auth", audience="tienda", cache_size=0
    )
    token = token_mint.token("alice")
    for _ in range(3):
        assert (await verifier.verify(token)).user_id == "alice"
    assert decoded == [token] * 3
    assert not verifier._verified
