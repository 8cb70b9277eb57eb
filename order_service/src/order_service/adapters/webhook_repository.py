"""Webhooks and deliveries: the ports the service layer uses, and their SQL implementations."""

from __future__ import annotations

import abc
from dataclasses import replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import col, or_, select
from sqlmodel.ext.asyncio.session import AsyncSession
from tienda_platform.telemetry import current_traceparent

from order_service.adapters.webhook_orm import WebhookDeliveryRow, WebhookRow
from order_service.domain.webhooks import DeliveryStatus, Webhook, WebhookDelivery


class WebhookRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, webhook: Webhook) -> None: ...

    @abc.abstractmethod
    async def get(self, webhook_id: str) -> Webhook | None: ...

    @abc.abstractmethod
    async def delete(self, webhook_id: str) -> None:
        """Remove the webhook and its delivery log."""

    @abc.abstractmethod
    async def list_newest_first(
        self, *, owner_id: str | None, before_id: str | None, limit: int
    ) -> list[Webhook]:
        """Up to limit webhooks (of one owner, or all), newest first, older than before_id."""

    @abc.abstractmethod
    async def receiving(self, customer_id: str) -> list[Webhook]:
        """The webhooks that may hear about this customer's orders (theirs and admins')."""


class DeliveryRepository(abc.ABC):
    @abc.abstractmethod
    async def add(self, delivery: WebhookDelivery) -> None: ...

    @abc.abstractmethod
    async def get(
        self, delivery_id: str, *, for_update: bool = False
    ) -> WebhookDelivery | None: ...

    @abc.abstractmethod
    async def save(self, delivery: WebhookDelivery) -> None: ...

    @abc.abstractmethod
    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        """Pending deliveries whose time has come, oldest due first, locked for this
        transaction (rows another worker holds are skipped)."""

    @abc.abstractmethod
    async def list_newest_first(
        self, *, webhook_id: str, before_id: str | None, limit: int
    ) -> list[WebhookDelivery]: ...


def utc(value: datetime) -> datetime:
    """The stored time as an aware UTC datetime (SQLite hands back naive ones)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _webhook(row: WebhookRow) -> Webhook:
    return Webhook(
        id=row.id,
        owner_id=row.owner_id,
        receives_all=row.receives_all,
        url=row.url,
        event_types=tuple(t for t in row.event_types.split(",") if t),
        secret=row.secret,
        create_time=utc(row.create_time),
    )


def _delivery(row: WebhookDeliveryRow) -> WebhookDelivery:
    return WebhookDelivery(
        id=row.id,
        webhook_id=row.webhook_id,
        event_id=row.event_id,
        event_type=row.event_type,
        body=row.body,
        status=DeliveryStatus(row.status),
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        next_attempt_time=utc(row.next_attempt_time) if row.next_attempt_time else None,
        create_time=utc(row.create_time),
        update_time=utc(row.update_time),
        order_id=row.order_id,
        trace_parent=row.trace_parent,
    )


def _delivery_row(delivery: WebhookDelivery) -> WebhookDeliveryRow:
    return WebhookDeliveryRow(
        id=delivery.id,
        webhook_id=delivery.webhook_id,
        event_id=delivery.event_id,
        event_type=delivery.event_type,
        body=delivery.body,
        status=delivery.status.value,
        attempts=delivery.attempts,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        next_attempt_time=delivery.next_attempt_time,
        create_time=delivery.create_time,
        update_time=delivery.update_time,
        order_id=delivery.order_id,
        trace_parent=delivery.trace_parent,
    )


# Built once (every order event looks up its receivers): it costs more to build than to run.
_RECEIVING = select(WebhookRow).where(
    or_(col(WebhookRow.owner_id) == sa.bindparam("customer_id"), col(WebhookRow.receives_all))
)


class SqlWebhookRepository(WebhookRepository):
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, webhook: Webhook) -> None:
        self._session.add(
            WebhookRow(
                id=webhook.id,
                owner_id=webhook.owner_id,
                receives_all=webhook.receives_all,
                url=webhook.url,
                event_types=",".join(webhook.event_types),
                secret=webhook.secret,
                create_time=webhook.create_time,
            )
        )

    async def get(self, webhook_id: str) -> Webhook | None:
        row = await self._session.get(WebhookRow, webhook_id)
        return None if row is None else _webhook(row)

    async def delete(self, webhook_id: str) -> None:
        # The webhook's row first: a delivery being recorded for it meanwhile (its foreign
        # key holds the row shared) commits before this goes on and is deleted with the rest;
        # one recorded after finds no webhook and is not made. (SQLite has no FOR UPDATE: its
        # writers hold the database's lock.)
        await self._session.exec(
            select(WebhookRow.id).where(WebhookRow.id == webhook_id).with_for_update()
        )
        await self._session.exec(
            sa.delete(WebhookDeliveryRow).where(col(WebhookDeliveryRow.webhook_id) == webhook_id)
        )
        await self._session.exec(sa.delete(WebhookRow).where(col(WebhookRow.id) == webhook_id))

    async def list_newest_first(
        self, *, owner_id: str | None, before_id: str | None, limit: int
    ) -> list[Webhook]:
        query = select(WebhookRow)
        if owner_id is not None:
            query = query.where(WebhookRow.owner_id == owner_id)
        if before_id is not None:
            query = query.where(col(WebhookRow.id) < before_id)
        query = query.order_by(col(WebhookRow.id).desc()).limit(limit)
        return [_webhook(row) for row in (await self._session.exec(query)).all()]

    async def receiving(self, customer_id: str) -> list[Webhook]:
        rows = await self._session.exec(_RECEIVING, params={"customer_id": customer_id})
        return [_webhook(row) for row in rows.all()]


# session.info key: the transaction queued webhook deliveries (the delivery worker has work).
DELIVERIES_ADDED = "order_service.deliveries_added"


class SqlDeliveryRepository(DeliveryRepository):
    def __init__(self, session: AsyncSession, *, skip_locked: bool) -> None:
        self._session = session
        # SQLite has no row locks: its writers take the database lock at BEGIN IMMEDIATE.
        self._skip_locked = skip_locked

    async def add(self, delivery: WebhookDelivery) -> None:
        self._session.info[DELIVERIES_ADDED] = True
        self._session.add(_delivery_row(replace(delivery, trace_parent=current_traceparent())))

    async def get(self, delivery_id: str, *, for_update: bool = False) -> WebhookDelivery | None:
        query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.id == delivery_id)
        if for_update:
            query = query.with_for_update()
        row = (await self._session.exec(query)).first()
        return None if row is None else _delivery(row)

    async def save(self, delivery: WebhookDelivery) -> None:
        await self._session.merge(_delivery_row(delivery))

    async def due(self, *, now: datetime, limit: int) -> list[WebhookDelivery]:
        query = (
            select(WebhookDeliveryRow)
            .where(
                WebhookDeliveryRow.status == DeliveryStatus.PENDING.value,
                col(WebhookDeliveryRow.next_attempt_time) <= now,
            )
            .order_by(col(WebhookDeliveryRow.next_attempt_time), col(WebhookDeliveryRow.id))
            .limit(limit)
        )
        if self._skip_locked:
            query = query.with_for_update(skip_locked=True)
        return [_delivery(row) for row in (await self._session.exec(query)).all()]

    async def list_newest_first(
        self, *, webhook_id: str, before_id: str | None, limit: int
    ) -> list[WebhookDelivery]:
        query = select(WebhookDeliveryRow).where(WebhookDeliveryRow.webhook_id == webhook_id)
        if before_id is not None:
            query = query.where(col(WebhookDeliveryRow.id) < before_id)
        query = query.order_by(col(WebhookDeliveryRow.id).desc()).limit(limit)
        return [_delivery(row) for row in (await self._session.exec(query)).all()]
