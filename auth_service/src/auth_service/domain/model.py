"""Users, refresh tokens and signing keys, and the rules their inputs must follow."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from tienda_platform.errors import Validator
from tienda_platform.ids import new_id

EMAIL_MAX_LENGTH = 254
PASSWORD_MIN_LENGTH = 10
PASSWORD_MAX_LENGTH = 128
FULL_NAME_MAX_LENGTH = 200
# Refresh tokens we issue are 46 characters; anything far longer is not worth hashing.
REFRESH_TOKEN_MAX_LENGTH = 256
REFRESH_TOKEN_PREFIX = "rt_"
SERVICE_CLIENT_ID_MAX_LENGTH = 64
SERVICE_CLIENT_SECRET_MAX_LENGTH = 256
# Production secrets must be at least this long (e.g. `openssl rand -hex 32` gives 64).
SERVICE_CLIENT_SECRET_MIN_LENGTH = 32
SERVICE_ROLE = "service"
SERVICE_SUBJECT_PREFIX = "service:"

# Deliberately simple: one "@", no whitespace or control characters, a dotted domain. Dots are
# excluded from the domain labels, so matching stays linear on hostile input.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f.]+(?:\.[^@\s\x00-\x1f\x7f.]+)+")
_SERVICE_CLIENT_ID = re.compile(r"[a-z][a-z0-9_-]*")


class Role(StrEnum):
    CUSTOMER = "customer"
    ADMIN = "admin"


@dataclass
class User:
    id: str
    email: str
    full_name: str
    password_hash: str = field(repr=False)
    role: Role
    create_time: datetime
    update_time: datetime


@dataclass
class RefreshToken:
    """A stored refresh token: only the hash of the opaque value the client holds."""

    id: str
    user_id: str
    family_id: str
    token_hash: str = field(repr=False)
    expires_at: datetime
    create_time: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 key pair; the public half is kept as a JWK for the JWKS."""

    kid: str
    private_key_pem: str = field(repr=False)
    public_jwk: dict[str, Any]
    create_time: datetime
    active: bool


@dataclass(frozen=True)
class TokenPolicy:
    """Who issues access tokens, for whom, and how long tokens live."""

    issuer: str
    audience: str
    access_ttl: timedelta
    refresh_ttl: timedelta

    @property
    def access_seconds(self) -> int:
        return int(self.access_ttl.total_seconds())

    def access_claims(self, *, subject: str, role: str, now: datetime) -> dict[str, Any]:
        """The claims of a new access token for subject, valid from now for access_ttl."""
        issued_at = int(now.timestamp())
        return {
            "sub": subject,
            "role": role,
            "typ": "access",
            "iss": self.issuer,
            "aud": self.audience,
            "iat": issued_at,
            "exp": issued_at + self.access_seconds,
            "jti": new_id(),
        }


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_in: int


@dataclass(frozen=True)
class ServiceToken:
    """An access token for another tienda service; it has no refresh token."""

    access_token: str = field(repr=False)
    expires_in: int


def _secret_digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


# Compared against when the client id is unknown, so both failures take the same time.
_NO_CLIENT_DIGEST = secrets.token_bytes(32)


@dataclass(frozen=True)
class ServiceClients:
    """The services that may obtain service tokens, each with the SHA-256 of its secret.

    Digests of equal length are compared in constant time, so neither the secret's length nor
    the position of its first wrong character shows in the response time."""

    digests: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def from_secrets(cls, secrets_by_client: Mapping[str, str]) -> ServiceClients:
        return cls({client: _secret_digest(s) for client, s in secrets_by_client.items()})

    def authenticate(self, client_id: str, client_secret: str) -> bool:
        """True when client_id is configured and client_secret is its secret."""
        expected = self.digests.get(client_id, _NO_CLIENT_DIGEST)
        matches = hmac.compare_digest(_secret_digest(client_secret), expected)
        return matches and self.knows(client_id)

    def knows(self, client_id: str) -> bool:
        return client_id in self.digests


def service_client_id_problem(client_id: str) -> str | None:
    """Why client_id cannot name a service client, or None."""
    if not 1 <= len(client_id) <= SERVICE_CLIENT_ID_MAX_LENGTH:
        return f"must be 1 to {SERVICE_CLIENT_ID_MAX_LENGTH} characters"
    if _SERVICE_CLIENT_ID.fullmatch(client_id) is None:
        return "must be lower-case letters, digits, '_' or '-', starting with a letter"
    return None


def parse_service_client_secrets(text: str) -> dict[str, str]:
    """`client_id:secret,client_id:secret` as a mapping; ValueError names the bad entry only."""
    parsed: dict[str, str] = {}
    for number, entry in enumerate(text.split(","), start=1):
        if not entry.strip():
            continue
        client_id, colon, secret = (part.strip() for part in entry.partition(":"))
        if not colon or not secret:
            raise ValueError(f"entry {number} is not client_id:secret")
        if problem := service_client_id_problem(client_id):
            raise ValueError(f"entry {number}: client id {problem}")
        if len(secret) > SERVICE_CLIENT_SECRET_MAX_LENGTH:
            raise ValueError(
                f"entry {number}: secret must be at most {SERVICE_CLIENT_SECRET_MAX_LENGTH} "
                "characters"
            )
        if client_id in parsed:
            raise ValueError(f"entry {number}: client id {client_id!r} appears twice")
        parsed[client_id] = secret
    return parsed


def new_refresh_token() -> str:
    """A fresh opaque refresh token."""
    return REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_refresh_token(token: str) -> str:
    """The SHA-256 hex digest stored in place of the token (it has 256 bits of entropy)."""
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def _has_control_characters(text: str) -> bool:
    return any(unicodedata.category(c) == "Cc" for c in text)


def check_email(validator: Validator, email: str, field_name: str = "email") -> str:
    """Record what is wrong with email and return it normalised."""
    normalised = normalise_email(email)
    if not normalised:
        validator.check(False, field_name, "is required")
    elif len(normalised) > EMAIL_MAX_LENGTH:
        validator.check(False, field_name, f"must be at most {EMAIL_MAX_LENGTH} characters")
    else:
        validator.check(
            _EMAIL.fullmatch(normalised) is not None, field_name, "is not an email address"
        )
    return normalised


def password_problem(password: str, *, email: str) -> str | None:
    """Why password breaks the policy, or None when it is acceptable."""
    if not PASSWORD_MIN_LENGTH <= len(password) <= PASSWORD_MAX_LENGTH:
        return f"must be {PASSWORD_MIN_LENGTH} to {PASSWORD_MAX_LENGTH} characters"
    if not any(c.isalpha() for c in password) or not any(c.isdigit() for c in password):
        return "must contain at least one letter and one digit"
    if normalise_email(password) == normalise_email(email):
        return "must not be the email address"
    return None


def check_password(
    validator: Validator, password: str, *, email: str, field_name: str = "password"
) -> None:
    """Record a violation when password breaks the policy."""
    problem = password_problem(password, email=email)
    validator.check(problem is None, field_name, problem or "")


def check_full_name(validator: Validator, full_name: str) -> str:
    """Record what is wrong with full_name and return it trimmed."""
    trimmed = full_name.strip()
    if not trimmed:
        validator.check(False, "full_name", "is required")
    elif len(trimmed) > FULL_NAME_MAX_LENGTH:
        validator.check(False, "full_name", f"must be at most {FULL_NAME_MAX_LENGTH} characters")
    else:
        validator.check(
            not _has_control_characters(trimmed), "full_name", "must not contain control characters"
        )
    return trimmed


def check_bounded(validator: Validator, value: str, field_name: str, max_length: int) -> None:
    """A value that is only looked up or compared, never stored: required and bounded."""
    if not value:
        validator.check(False, field_name, "is required")
    else:
        validator.check(
            len(value) <= max_length, field_name, f"must be at most {max_length} characters"
        )
