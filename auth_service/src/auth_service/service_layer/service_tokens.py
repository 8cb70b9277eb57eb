"""Access tokens for other tienda services, by OAuth 2.0 client credentials."""

from __future__ import annotations

from loguru import logger
from tienda_platform.errors import Validator

from auth_service.adapters.signing import sign_token
from auth_service.domain.errors import InvalidClientCredentials, NoSigningKey
from auth_service.domain.model import (
    SERVICE_CLIENT_ID_MAX_LENGTH,
    SERVICE_CLIENT_SECRET_MAX_LENGTH,
    SERVICE_ROLE,
    SERVICE_SUBJECT_PREFIX,
    ServiceToken,
    check_bounded,
)
from auth_service.service_layer.services import Dependencies


async def issue_service_token(
    *, deps: Dependencies, client_id: str, client_secret: str
) -> ServiceToken:
    """An access token with role "service" for a configured client presenting its secret."""
    validator = Validator()
    check_bounded(validator, client_id, "client_id", SERVICE_CLIENT_ID_MAX_LENGTH)
    check_bounded(validator, client_secret, "client_secret", SERVICE_CLIENT_SECRET_MAX_LENGTH)
    validator.raise_if_invalid()
    if not deps.service_clients.authenticate(client_id, client_secret):
        # An unknown id is not logged: it may be a secret pasted into the wrong field.
        known = deps.service_clients.knows(client_id)
        logger.warning("service token refused", client_id=client_id if known else "(unknown)")
        raise InvalidClientCredentials()
    async with deps.reader() as uow:
        key = await uow.signing_keys.active()
    if key is None:
        raise NoSigningKey()
    claims = deps.policy.access_claims(
        subject=SERVICE_SUBJECT_PREFIX + client_id, role=SERVICE_ROLE, now=deps.clock()
    )
    logger.info("service token issued", client_id=client_id)
    return ServiceToken(
        access_token=sign_token(key=key, claims=claims), expires_in=deps.policy.access_seconds
    )
