"""Use cases on stock reservations: reserve, release and commit, each idempotent by order id.

A reservation row per order is the idempotency key: a repeated request finds it and answers
with what was decided the first time. Status changes are conditional updates, so concurrent
requests for one order cannot both give stock back.

Every change records its event in the same transaction (stock.reserved, stock.rejected,
stock.released, stock.committed, subject "orders/<order_id>"); a call that changes nothing
records nothing, so a repeated request or a redelivered event publishes no second event.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime

from events.v1 import events_pb2
from loguru import logger
from tienda_platform.errors import InvalidArgument, Unavailable, Validator

from product_service.domain.errors import ReservationAlreadyExists, ReservationNotCommittable
from product_service.domain.model import (
    REASON_MAX_LENGTH,
    Reservation,
    ReservationStatus,
    StockItem,
    check_id,
    check_stock_items,
)
from product_service.service_layer.services import Dependencies
from product_service.service_layer.unit_of_work import AbstractUnitOfWork

TOMBSTONE_REASON = "released before any stock was reserved"
# How an order's saga runs, as its reservation shows it (stock.reserved and stock.rejected
# carry it): the orchestrator reserves by RPC, the choreography on order.created.
ORCHESTRATION = "orchestration"
CHOREOGRAPHY = "choreography"
# A status can change at most twice (RESERVED -> COMMITTED -> RELEASED), so a request that
# loses a race sees a settled row within a few attempts.
_ATTEMPTS = 4


def _check_order_id(order_id: str) -> None:
    validator = Validator()
    check_id(validator, order_id, "order_id")
    validator.raise_if_invalid()


def _subject(order_id: str) -> str:
    return f"orders/{order_id}"


def _record_decision(uow: AbstractUnitOfWork, reservation: Reservation, saga_mode: str) -> None:
    order_id = reservation.order_id
    if reservation.status is ReservationStatus.RESERVED:
        uow.record_event(
            event_type="stock.reserved",
            subject=_subject(order_id),
            payload=events_pb2.StockReserved(order_id=order_id, saga_mode=saga_mode),
        )
    else:
        uow.record_event(
            event_type="stock.rejected",
            subject=_subject(order_id),
            payload=events_pb2.StockRejected(
                order_id=order_id, reason=reservation.reason, saga_mode=saga_mode
            ),
        )


def _record_released(uow: AbstractUnitOfWork, order_id: str, reason: str) -> None:
    uow.record_event(
        event_type="stock.released",
        subject=_subject(order_id),
        payload=events_pb2.StockReleased(order_id=order_id, reason=reason),
    )


async def reserve_stock(
    *, deps: Dependencies, order_id: str, items: Sequence[StockItem], saga_mode: str = ""
) -> Reservation:
    """Take the stock of every item, all or nothing; a repeated call returns the first answer.
    saga_mode (ORCHESTRATION or CHOREOGRAPHY, "" when not known) goes into the event."""
    validator = Validator()
    check_id(validator, order_id, "order_id")
    check_stock_items(validator, items)
    validator.raise_if_invalid()
    async with deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
        if stored is not None:
            return stored
        reservation = await _take_stock(uow, order_id=order_id, items=items, now=deps.clock())
        try:
            await uow.reservations.add(reservation)
        except ReservationAlreadyExists:
            # A concurrent request (or a release tombstone) for this order committed first:
            # drop what we took and answer with the stored decision.
            await uow.rollback()
            return await _stored(uow, order_id)
        _record_decision(uow, reservation, saga_mode)
        await uow.commit()
    logger.info(
        "stock reservation {status}",
        status=reservation.status.value.lower(),
        order_id=order_id,
        reason=reservation.reason,
    )
    return reservation


async def _take_stock(
    uow: AbstractUnitOfWork, *, order_id: str, items: Sequence[StockItem], now: datetime
) -> Reservation:
    # A fixed lock order (by product id) keeps concurrent multi-item reservations deadlock-free.
    ordered = tuple(sorted(items, key=lambda item: item.product_id))
    for item in ordered:
        if await uow.products.take_stock(item.product_id, item.quantity):
            continue
        product = await uow.products.get(item.product_id)
        reason = (
            f"insufficient stock for {product.sku}"
            if product is not None
            else f"unknown product {item.product_id}"
        )
        await uow.rollback()
        return Reservation(
            order_id=order_id,
            status=ReservationStatus.REJECTED,
            reason=reason,
            items=(),
            create_time=now,
            update_time=now,
        )
    return Reservation(
        order_id=order_id,
        status=ReservationStatus.RESERVED,
        reason="",
        items=ordered,
        create_time=now,
        update_time=now,
    )


async def _stored(uow: AbstractUnitOfWork, order_id: str) -> Reservation:
    stored = await uow.reservations.get(order_id)
    if stored is None:
        raise Unavailable(f"reservation of order {order_id} is changing; retry")
    return stored


async def reject_reservation(
    *, deps: Dependencies, order_id: str, reason: str, saga_mode: str = ""
) -> Reservation:
    """Decide REJECTED for an order whose request can never be reserved (malformed lines in an
    event, say), so that its saga ends; a decision already stored stands."""
    _check_order_id(order_id)
    now = deps.clock()
    rejected = Reservation(
        order_id=order_id,
        status=ReservationStatus.REJECTED,
        reason=reason[:REASON_MAX_LENGTH],
        items=(),
        create_time=now,
        update_time=now,
    )
    async with deps.uow() as uow:
        stored = await uow.reservations.get(order_id)
        if stored is not None:
            return stored
        try:
            await uow.reservations.add(rejected)
        except ReservationAlreadyExists:
            await uow.rollback()
            return await _stored(uow, order_id)
        _record_decision(uow, rejected, saga_mode)
        await uow.commit()
    logger.warning("stock reservation rejected", order_id=order_id, reason=rejected.reason)
    return rejected


def rejection_reason(error: InvalidArgument) -> str:
    """The reason a malformed reservation request is rejected with: its first violation."""
    first = error.violations[0] if error.violations else None
    detail = error.message if first is None else f"{first.field} {first.description}"
    return f"invalid order: {detail}"[:REASON_MAX_LENGTH]


async def release_stock(*, deps: Dependencies, order_id: str, reason: str) -> Reservation:
    """Give a reservation's stock back; for an unknown order, leave a RELEASED tombstone.

    Either change records stock.released with reason (why the stock came back).
    """
    _check_order_id(order_id)
    for _ in range(_ATTEMPTS):
        now = deps.clock()
        async with deps.uow() as uow:
            stored = await uow.reservations.get(order_id)
            if stored is None:
                # The release overtook the reservation: the tombstone makes a late ReserveStock
                # take nothing, so the compensation cannot be undone by a delayed request.
                tombstone = Reservation(
                    order_id=order_id,
                    status=ReservationStatus.RELEASED,
                    reason=TOMBSTONE_REASON,
                    items=(),
                    create_time=now,
                    update_time=now,
                )
                try:
                    await uow.reservations.add(tombstone)
                except ReservationAlreadyExists:
                    continue
                _record_released(uow, order_id, reason)
                await uow.commit()
                logger.info("stock release recorded before any reservation", order_id=order_id)
                return tombstone
            if not stored.status.holds_stock:
                return stored
            released = await uow.reservations.change_status(
                order_id, expected=stored.status, new=ReservationStatus.RELEASED, at=now
            )
            if not released:
                continue
            for item in stored.items:
                await uow.products.return_stock(item.product_id, item.quantity)
            _record_released(uow, order_id, reason)
            await uow.commit()
        logger.info("stock released", order_id=order_id, reason=reason)
        return replace(stored, status=ReservationStatus.RELEASED, update_time=now)
    raise Unavailable(f"reservation of order {order_id} is changing; retry")


async def commit_reservation(*, deps: Dependencies, order_id: str) -> Reservation:
    """Make a RESERVED reservation final; committing twice is fine, anything else is refused."""
    _check_order_id(order_id)
    for _ in range(_ATTEMPTS):
        now = deps.clock()
        async with deps.uow() as uow:
            stored = await uow.reservations.get(order_id)
            if stored is None:
                raise ReservationNotCommittable(order_id, None)
            if stored.status is ReservationStatus.COMMITTED:
                return stored
            if stored.status is not ReservationStatus.RESERVED:
                raise ReservationNotCommittable(order_id, stored.status.value)
            committed = await uow.reservations.change_status(
                order_id,
                expected=ReservationStatus.RESERVED,
                new=ReservationStatus.COMMITTED,
                at=now,
            )
            if not committed:
                continue
            uow.record_event(
                event_type="stock.committed",
                subject=_subject(order_id),
                payload=events_pb2.StockCommitted(order_id=order_id),
            )
            await uow.commit()
        logger.info("stock reservation committed", order_id=order_id)
        return replace(stored, status=ReservationStatus.COMMITTED, update_time=now)
    raise Unavailable(f"reservation of order {order_id} is changing; retry")
