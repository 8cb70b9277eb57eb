"""Use cases on users and their sessions: register, log in, refresh, read, update, delete."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime

from events.v1 import events_pb2
from loguru import logger
from tienda_platform.auth import Principal
from tienda_platform.errors import InvalidArgument, PermissionDenied, Validator
from tienda_platform.ids import is_valid_id, new_id

from auth_service.adapters.passwords import AbstractPasswordHasher
from auth_service.adapters.signing import sign_token
from auth_service.domain.errors import (
    EmailAlreadyRegistered,
    InvalidCredentials,
    InvalidRefreshToken,
    NoSigningKey,
    RefreshTokenReused,
    UserGone,
    UserNotFound,
)
from auth_service.domain.model import (
    EMAIL_MAX_LENGTH,
    PASSWORD_MAX_LENGTH,
    REFRESH_TOKEN_MAX_LENGTH,
    IssuedTokens,
    RefreshToken,
    Role,
    ServiceClients,
    TokenPolicy,
    User,
    check_bounded,
    check_email,
    check_full_name,
    check_password,
    hash_refresh_token,
    new_refresh_token,
    normalise_email,
)
from auth_service.service_layer.unit_of_work import AbstractUnitOfWork

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Dependencies:
    """What every use case needs; wired once by bootstrap()."""

    uow: Callable[[], AbstractUnitOfWork]
    passwords: AbstractPasswordHasher
    policy: TokenPolicy
    clock: Clock
    service_clients: ServiceClients = field(default_factory=ServiceClients)
    # For queries: a unit of work that only reads (on SQLite it does not take the write lock,
    # so reads never queue behind registrations and logins). Without one, queries use `uow`.
    read_uow: Callable[[], AbstractUnitOfWork] | None = None

    def reader(self) -> AbstractUnitOfWork:
        return (self.read_uow or self.uow)()


def _user_subject(user_id: str) -> str:
    return f"users/{user_id}"


async def register(*, deps: Dependencies, email: str, password: str, full_name: str) -> User:
    """Create a customer account."""
    validator = Validator()
    email = check_email(validator, email)
    full_name = check_full_name(validator, full_name)
    check_password(validator, password, email=email)
    validator.raise_if_invalid()
    # Hash before the transaction: argon2 is slow, and SQLite holds its write lock throughout.
    password_hash = await deps.passwords.hash(password)
    now = deps.clock()
    user = User(
        id=new_id(),
        email=email,
        full_name=full_name,
        password_hash=password_hash,
        role=Role.CUSTOMER,
        create_time=now,
        update_time=now,
    )
    async with deps.uow() as uow:
        if await uow.users.get_by_email(email) is not None:
            raise EmailAlreadyRegistered()
        await uow.users.add(user)
        uow.record_event(
            event_type="user.registered",
            subject=_user_subject(user.id),
            payload=events_pb2.UserRegistered(
                user_id=user.id, email=user.email, full_name=user.full_name
            ),
        )
        await uow.commit()
    logger.info("user registered", user_id=user.id)
    return user


async def login(*, deps: Dependencies, email: str, password: str) -> IssuedTokens:
    """Exchange credentials for an access token and the first refresh token of a new family."""
    validator = Validator()
    email = normalise_email(email)
    check_bounded(validator, email, "email", EMAIL_MAX_LENGTH)
    check_bounded(validator, password, "password", PASSWORD_MAX_LENGTH)
    validator.raise_if_invalid()
    # Verified outside the transaction (slow), so verified again when the password hash
    # changed in between: a new password refuses the old one, a rehash keeps it good.
    for _ in range(2):
        async with deps.reader() as uow:
            user = await uow.users.get_by_email(email)
        # The dummy hash keeps unknown emails as slow.
        if not await deps.passwords.verify(user.password_hash if user else None, password):
            raise InvalidCredentials()
        assert user is not None
        new_hash = (
            await deps.passwords.hash(password)
            if deps.passwords.needs_rehash(user.password_hash)
            else None
        )
        now = deps.clock()
        async with deps.uow() as uow:
            current = await uow.users.get(user.id, for_update=True)
            if current is None:
                raise InvalidCredentials()  # deleted while we were verifying
            if current.password_hash != user.password_hash:
                continue
            if new_hash is not None:
                await uow.users.update(replace(current, password_hash=new_hash))
            issued = await _issue_tokens(uow, deps=deps, user=current, family_id=new_id(), now=now)
            await uow.commit()
        logger.info("user logged in", user_id=user.id)
        return issued
    raise InvalidCredentials()  # the password changed twice while we were verifying


async def refresh(*, deps: Dependencies, refresh_token: str) -> IssuedTokens:
    """Spend a refresh token for new tokens; reusing a spent one revokes its whole family."""
    validator = Validator()
    check_bounded(validator, refresh_token, "refresh_token", REFRESH_TOKEN_MAX_LENGTH)
    validator.raise_if_invalid()
    now = deps.clock()
    async with deps.uow() as uow:
        token = await uow.refresh_tokens.get_by_hash(hash_refresh_token(refresh_token))
        if token is None:
            raise InvalidRefreshToken("invalid refresh token")
        # The user held (see AbstractUserRepository.get): a revocation running meanwhile (a
        # replayed token, a new password) waits for this refresh to commit and then revokes
        # the token it issues too, or commits first and leaves mark_used nothing to spend.
        user = await uow.users.get(token.user_id, for_update=True)
        if user is None:
            raise InvalidRefreshToken("invalid refresh token")
        if token.revoked_at is not None:
            raise InvalidRefreshToken("refresh token revoked")
        if token.used_at is None and token.expires_at <= now:
            raise InvalidRefreshToken("refresh token expired")
        # A spent token presented again means a copy exists somewhere: a concurrent refresh
        # that lost the conditional update is treated the same way as a later replay.
        if token.used_at is not None or not await uow.refresh_tokens.mark_used(token.id, at=now):
            await uow.refresh_tokens.revoke_family(token.family_id, at=now)
            await uow.commit()
            logger.warning(
                "refresh token reused; its family is revoked",
                user_id=token.user_id,
                family_id=token.family_id,
            )
            raise RefreshTokenReused()
        issued = await _issue_tokens(uow, deps=deps, user=user, family_id=token.family_id, now=now)
        await uow.commit()
    return issued


async def get_current_user(*, deps: Dependencies, user_id: str) -> User:
    """The caller's own account."""
    async with deps.reader() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise UserGone()
    return user


async def update_current_user(
    *,
    deps: Dependencies,
    user_id: str,
    full_name: str | None,
    password: str | None,
    current_password: str | None,
) -> User:
    """Change the caller's name and/or password; a new password ends their other sessions."""
    user = await get_current_user(deps=deps, user_id=user_id)
    validator = Validator()
    if full_name is not None:
        full_name = check_full_name(validator, full_name)
    if password is not None:
        check_password(validator, password, email=user.email)
        check_bounded(validator, current_password or "", "current_password", PASSWORD_MAX_LENGTH)
    elif current_password is not None:
        validator.check(
            len(current_password) <= PASSWORD_MAX_LENGTH,
            "current_password",
            f"must be at most {PASSWORD_MAX_LENGTH} characters",
        )
    validator.raise_if_invalid()
    new_hash = None
    if password is not None:
        if not await deps.passwords.verify(user.password_hash, current_password or ""):
            raise InvalidArgument.for_field("current_password", "does not match")
        new_hash = await deps.passwords.hash(password)
    if full_name is None and new_hash is None:
        return user
    now = deps.clock()
    async with deps.uow() as uow:
        current = await uow.users.get(user_id, for_update=True)
        if current is None:
            raise UserGone()
        if (
            new_hash is not None
            and current.password_hash != user.password_hash
            and not await deps.passwords.verify(current.password_hash, current_password or "")
        ):
            # the hash changed since current_password was checked: a rehash keeps it good, a
            # password changed meanwhile (another session's) does not
            raise InvalidArgument.for_field("current_password", "does not match")
        profile_changed = full_name is not None and full_name != current.full_name
        current = replace(
            current,
            full_name=full_name if full_name is not None else current.full_name,
            password_hash=new_hash or current.password_hash,
            update_time=now,
        )
        await uow.users.update(current)
        if new_hash is not None:
            await uow.refresh_tokens.revoke_for_user(user_id, at=now)
        # Other services copy only the profile (name, email); a new password is not news to them.
        if profile_changed:
            uow.record_event(
                event_type="user.updated",
                subject=_user_subject(user_id),
                payload=events_pb2.UserUpdated(
                    user_id=user_id, email=current.email, full_name=current.full_name
                ),
            )
        await uow.commit()
    changed = [name for name, value in (("full_name", full_name), ("password", new_hash)) if value]
    logger.info("user updated", user_id=user_id, changed=changed)
    return current


async def delete_current_user(*, deps: Dependencies, user_id: str) -> None:
    """Delete the caller's account and every refresh token it holds."""
    async with deps.uow() as uow:
        if await uow.users.get(user_id, for_update=True) is None:
            raise UserGone()
        await uow.refresh_tokens.delete_for_user(user_id)
        await uow.users.delete(user_id)
        uow.record_event(
            event_type="user.deleted",
            subject=_user_subject(user_id),
            payload=events_pb2.UserDeleted(user_id=user_id),
        )
        await uow.commit()
    logger.info("user deleted", user_id=user_id)


async def get_user(*, deps: Dependencies, caller: Principal, user_id: str) -> User:
    """One user, for an admin or for that user."""
    if not is_valid_id(user_id):
        raise InvalidArgument.for_field("id", "must be a UUID")
    # Checked before the lookup, so a customer cannot probe which ids exist.
    if not caller.is_admin and caller.user_id != user_id:
        raise PermissionDenied("only an admin or the user themself may read a user")
    async with deps.reader() as uow:
        user = await uow.users.get(user_id)
    if user is None:
        raise UserNotFound(user_id)
    return user


async def bootstrap_admin(*, deps: Dependencies, email: str, password: str) -> None:
    """Make sure the configured admin exists: create it, or promote the user with that email."""
    validator = Validator()
    email = check_email(validator, email, "BOOTSTRAP_ADMIN_EMAIL")
    validator.raise_if_invalid()
    found = await _promote_to_admin(deps=deps, email=email)
    if found is None:
        try:
            found = "created", await _create_admin(deps=deps, email=email, password=password)
        except EmailAlreadyRegistered:
            # Another replica created the user between our read and our insert.
            found = await _promote_to_admin(deps=deps, email=email)
    assert found is not None
    outcome, user_id = found
    logger.info("bootstrap admin {outcome}", outcome=outcome, user_id=user_id)


async def _promote_to_admin(*, deps: Dependencies, email: str) -> tuple[str, str] | None:
    """Make the user with this email an admin; None when there is no such user."""
    async with deps.uow() as uow:
        found = await uow.users.get_by_email(email)
        user = await uow.users.get(found.id, for_update=True) if found is not None else None
        if user is None:
            return None
        if user.role is Role.ADMIN:
            return "already present", user.id
        # Promote only: the account's owner keeps the password they chose.
        await uow.users.update(replace(user, role=Role.ADMIN, update_time=deps.clock()))
        await uow.commit()
    return "promoted", user.id


async def _create_admin(*, deps: Dependencies, email: str, password: str) -> str:
    password_hash = await deps.passwords.hash(password)
    now = deps.clock()
    user = User(
        id=new_id(),
        email=email,
        full_name="Administrator",
        password_hash=password_hash,
        role=Role.ADMIN,
        create_time=now,
        update_time=now,
    )
    async with deps.uow() as uow:
        await uow.users.add(user)
        # Not a sign-up (no welcome email, no registration to count), but the services that
        # keep a copy of the users (order_service's customer snapshot, for the admin's own
        # orders and their emails) learn the admin's name and email as of any other change.
        uow.record_event(
            event_type="user.updated",
            subject=_user_subject(user.id),
            payload=events_pb2.UserUpdated(
                user_id=user.id, email=user.email, full_name=user.full_name
            ),
        )
        await uow.commit()
    return user.id


async def _issue_tokens(
    uow: AbstractUnitOfWork, *, deps: Dependencies, user: User, family_id: str, now: datetime
) -> IssuedTokens:
    key = await uow.signing_keys.active()
    if key is None:
        raise NoSigningKey()
    policy = deps.policy
    raw_refresh_token = new_refresh_token()
    await uow.refresh_tokens.add(
        RefreshToken(
            id=new_id(),
            user_id=user.id,
            family_id=family_id,
            token_hash=hash_refresh_token(raw_refresh_token),
            expires_at=now + policy.refresh_ttl,
            create_time=now,
        )
    )
    claims = policy.access_claims(subject=user.id, role=user.role.value, now=now)
    return IssuedTokens(
        access_token=sign_token(key=key, claims=claims),
        refresh_token=raw_refresh_token,
        expires_in=policy.access_seconds,
    )
