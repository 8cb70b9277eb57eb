"""Ed25519 signing keys and the EdDSA access tokens they sign."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tienda_platform.auth import ALGORITHM

from auth_service.domain.model import SigningKey


def _thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 thumbprint of an OKP key: a kid derived from the key itself."""
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).decode().rstrip("=")


def generate_signing_key(*, now: datetime) -> SigningKey:
    """A new, active Ed25519 key with its public JWK."""
    private_key = Ed25519PrivateKey.generate()
    public = jwt.algorithms.OKPAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    kid = _thumbprint(public)
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return SigningKey(
        kid=kid,
        private_key_pem=pem,
        public_jwk={
            "kty": public["kty"],
            "crv": public["crv"],
            "x": public["x"],
            "kid": kid,
            "alg": ALGORITHM,
            "use": "sig",
        },
        create_time=now,
        active=True,
    )


def sign_token(*, key: SigningKey, claims: dict[str, Any]) -> str:
    """A compact JWS of claims, signed by key and naming it in the `kid` header."""
    private_key = serialization.load_pem_private_key(key.private_key_pem.encode(), password=None)
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError(f"signing key {key.kid} is not an Ed25519 key")
    return jwt.encode(claims, private_key, algorithm=ALGORITHM, headers={"kid": key.kid})
