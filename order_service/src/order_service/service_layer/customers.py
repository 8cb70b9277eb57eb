"""The customer snapshot of the write model, kept from auth_service's user events."""

from __future__ import annotations

from datetime import datetime

from order_service.domain.customers import Customer
from order_service.domain.model import CUSTOMER_DELETED
from order_service.service_layer import transitions
from order_service.service_layer.order_saga import give_back
from order_service.service_layer.unit_of_work import AbstractUnitOfWork


async def customer_changed(
    *,
    uow: AbstractUnitOfWork,
    customer_id: str,
    email: str,
    full_name: str,
    event_time: datetime,
) -> None:
    """user.registered / user.updated: take the new name and email, unless already newer."""
    async with uow:
        # an event about this customer that another replica handles meanwhile waits, so it
        # reads what this one wrote: an older event never overwrites a newer one
        await uow.customers.hold(customer_id, exclusive=True)
        customer = await uow.customers.get(customer_id)
        if customer is not None and not customer.accepts(event_time):
            return
        await uow.customers.save(
            Customer(
                id=customer_id,
                email=email,
                full_name=full_name,
                deleted=False,
                version_time=event_time,
            )
        )
        await uow.commit()


async def customer_deleted(
    *, uow: AbstractUnitOfWork, customer_id: str, event_time: datetime
) -> None:
    """user.deleted: cancel the user's PENDING orders and anonymise the snapshot the other
    orders show."""
    async with uow:
        # no order of theirs is placed while this runs (see CustomerRepository.hold)
        await uow.customers.hold(customer_id, exclusive=True)
        customer = await uow.customers.get(customer_id)
        if customer is None:
            customer = Customer.deleted_user(customer_id=customer_id, event_time=event_time)
        else:
            customer.anonymise(event_time=event_time)
        await uow.customers.save(customer)
        for pending in await uow.orders.pending_of(customer_id):
            order = await uow.orders.get(pending.id, for_update=True)
            if order is None or not order.is_pending:
                continue
            await transitions.cancel(uow, order, reason=CUSTOMER_DELETED)
            await give_back(uow, order)
        await uow.commit()
