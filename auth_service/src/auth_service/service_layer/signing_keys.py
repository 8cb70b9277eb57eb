"""Use cases on the keys that sign access tokens: first key, rotation, the public JWKS."""

from __future__ import annotations

from typing import Any

from loguru import logger

from auth_service.adapters.signing import generate_signing_key
from auth_service.domain.model import SigningKey
from auth_service.service_layer.services import Dependencies


async def ensure_signing_key(*, deps: Dependencies) -> SigningKey:
    """The active signing key, created on first start (by one replica when several start
    together)."""
    async with deps.uow() as uow:
        await uow.signing_keys.take_turns()
        key = await uow.signing_keys.active()
        if key is not None:
            return key
        key = generate_signing_key(now=deps.clock())
        await uow.signing_keys.add(key)
        await uow.commit()
    logger.info("signing key created", kid=key.kid)
    return key


async def rotate_signing_key(*, deps: Dependencies) -> SigningKey:
    """Add a new active key; older keys stop signing but stay in the JWKS for verification."""
    key = generate_signing_key(now=deps.clock())
    async with deps.uow() as uow:
        await uow.signing_keys.take_turns()
        await uow.signing_keys.deactivate_all()
        await uow.signing_keys.add(key)
        await uow.commit()
    logger.info("signing key rotated", kid=key.kid)
    return key


async def get_jwks(*, deps: Dependencies) -> list[dict[str, Any]]:
    """The public JWK of every stored key."""
    async with deps.reader() as uow:
        keys = await uow.signing_keys.all()
    return [dict(key.public_jwk) for key in keys]
