"""The CQRS read model: order summaries projected from events, and the ListOrders query.

It is fed only by events (consumer group "order_read_model"), never by the write model's
tables, so it is eventually consistent: an order shows up in lists, and its status changes
there, shortly after the write model committed them (the time the outbox relay and this
consumer take, typically milliseconds).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from tienda_platform import pagination
from tienda_platform.auth import Principal
from tienda_platform.errors import InvalidArgument
from tienda_platform.ids import is_valid_id

from order_service.domain.customers import Customer
from order_service.domain.model import OrderLine, OrderStatus
from order_service.domain.summary import OrderSummary
from order_service.service_layer.unit_of_work import AbstractUnitOfWork


@dataclass(frozen=True)
class SummaryPage:
    orders: list[OrderSummary]
    next_page_token: str


async def list_orders(
    *, page_size: int, page_token: str, principal: Principal, uow: AbstractUnitOfWork
) -> SummaryPage:
    """One page of the caller's orders (every order for admins), newest first."""
    limit = pagination.page_size(page_size)
    cursor = pagination.decode_page_token(page_token, ("before",))
    before = cursor["before"] if cursor else None
    if before is not None and not is_valid_id(before):
        raise InvalidArgument.for_field("page_token", "not a page token from this API")
    async with uow:
        summaries = await uow.summaries.list_newest_first(
            customer_id=None if principal.is_admin else principal.user_id,
            before_id=before,
            limit=limit + 1,
        )
    page, more = summaries[:limit], len(summaries) > limit
    token = pagination.encode_page_token({"before": page[-1].order_id}) if more else ""
    return SummaryPage(orders=page, next_page_token=token)


async def order_created(
    *,
    uow: AbstractUnitOfWork,
    order_id: str,
    customer_id: str,
    lines: list[OrderLine],
    total_cents: int,
    event_time: datetime,
) -> None:
    """order.created: a PENDING summary (or the lines of one a status event started)."""
    async with uow:
        summary = await uow.summaries.get(order_id, for_update=True)
        if summary is None:
            summary = OrderSummary(
                order_id=order_id,
                customer_id=customer_id,
                status=OrderStatus.PENDING,
                status_reason="",
                total_cents=total_cents,
                create_time=event_time,
                update_time=event_time,
                lines=lines,
            )
        else:
            summary.fill_in(lines=lines, total_cents=total_cents, create_time=event_time)
        await uow.summaries.save(summary)
        await uow.commit()


async def order_status_changed(
    *,
    uow: AbstractUnitOfWork,
    order_id: str,
    customer_id: str,
    status: OrderStatus,
    reason: str,
    total_cents: int,
    event_time: datetime,
) -> None:
    """order.confirmed / order.cancelled / order.rejected: move the summary forward."""
    async with uow:
        # locked: another replica's event about this order waits and then sees this one's
        # status, so a lower-ranked status never overwrites a higher one
        summary = await uow.summaries.get(order_id, for_update=True)
        if summary is None:
            # order.created is late (a retried delivery): start with what this event knows
            summary = OrderSummary(
                order_id=order_id,
                customer_id=customer_id,
                status=status,
                status_reason=reason,
                total_cents=total_cents,
                create_time=event_time,
                update_time=event_time,
            )
        elif not summary.move_to(status, reason=reason, at=event_time):
            return
        await uow.summaries.save(summary)
        await uow.commit()


async def customer_named(
    *, uow: AbstractUnitOfWork, customer_id: str, full_name: str, event_time: datetime
) -> None:
    """user.registered / user.updated: the name the customer's summaries show."""
    async with uow:
        # another replica's event about this customer waits: the newest one wins
        await uow.customers.hold(customer_id, exclusive=True)
        known = await uow.summaries.get_customer(customer_id)
        if known is not None and not known.accepts(event_time):
            return
        await uow.summaries.save_customer(
            Customer(customer_id, "", full_name, deleted=False, version_time=event_time)
        )
        await uow.commit()


async def customer_forgotten(
    *, uow: AbstractUnitOfWork, customer_id: str, event_time: datetime
) -> None:
    """user.deleted: summaries show an anonymous name from now on."""
    async with uow:
        await uow.customers.hold(customer_id, exclusive=True)
        known = await uow.summaries.get_customer(customer_id)
        if known is None:
            known = Customer.deleted_user(customer_id=customer_id, event_time=event_time)
        else:
            known.anonymise(event_time=event_time)
        await uow.summaries.save_customer(known)
        await uow.commit()
