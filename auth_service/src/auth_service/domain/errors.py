"""Errors of the auth domain, each a platform error so it maps to its gRPC status."""

from __future__ import annotations

from tienda_platform.errors import AlreadyExists, NotFound, Unauthenticated, Unavailable


class InvalidCredentials(Unauthenticated):
    """Wrong email or wrong password; one message for both so neither is revealed."""

    def __init__(self) -> None:
        super().__init__("invalid email or password")


class InvalidClientCredentials(Unauthenticated):
    """Unknown service client or wrong secret; one message for both."""

    def __init__(self) -> None:
        super().__init__("invalid client credentials")


class EmailAlreadyRegistered(AlreadyExists):
    def __init__(self) -> None:
        super().__init__("a user with this email already exists")


class InvalidRefreshToken(Unauthenticated):
    """Unknown, expired or revoked refresh token, or one whose user is gone."""


class RefreshTokenReused(Unauthenticated):
    def __init__(self) -> None:
        super().__init__("refresh token reused")


class UserNotFound(NotFound):
    def __init__(self, user_id: str) -> None:
        super().__init__(f"user {user_id} not found")


class UserGone(Unauthenticated):
    """A valid access token whose user has since been deleted."""

    def __init__(self) -> None:
        super().__init__("the user of this token no longer exists")


class NoSigningKey(Unavailable):
    def __init__(self) -> None:
        super().__init__("no signing key yet; the service is still starting")
