"""The commands and queries of the write model: place, read and cancel orders.

Placing an order only stores it PENDING (with its saga, when orchestrated) and announces it;
the saga takes it to its end asynchronously. Lists come from the read model (read_model.py).
"""

from __future__ import annotations

from tienda_platform.auth import Principal
from tienda_platform.ids import new_id
from tienda_platform.telemetry import set_span_attributes

from order_service.adapters.repository import PlacedRequest
from order_service.domain.commands import CancelOrder, CreateOrder
from order_service.domain.errors import (
    CustomerDeleted,
    IllegalTransition,
    OrderNotFound,
    ProductNotFound,
    RequestAlreadyPlaced,
    RequestIdReused,
)
from order_service.domain.model import (
    Order,
    OrderLine,
    OrderStatus,
    SagaMode,
    validate_new_order,
    validate_order_id,
)
from order_service.domain.saga import Saga, SagaStep
from order_service.service_layer import transitions
from order_service.service_layer.order_saga import give_back
from order_service.service_layer.ports import ProductCatalog, SagaRunsHere
from order_service.service_layer.transitions import utc_now
from order_service.service_layer.unit_of_work import AbstractUnitOfWork


async def create_order(
    *,
    command: CreateOrder,
    principal: Principal,
    uow: AbstractUnitOfWork,
    catalog: ProductCatalog,
    saga_mode: SagaMode,
    saga_runs_here: SagaRunsHere | None = None,
) -> Order:
    """Validate, snapshot the products, and store the order PENDING with order.created.

    An orchestrated order's saga is stored with it; with `saga_runs_here`, claimed by this
    process's saga worker, which runs it once the order is committed.

    A request with a request_id that placed an order before (sent again after a lost answer,
    or twice at once) gets that order as it is now, and places no other."""
    validate_new_order(
        items=command.items, payment_token=command.payment_token, request_id=command.request_id
    )
    if command.request_id:
        earlier = await _placed_earlier(uow, command, principal)
        if earlier is not None:
            return earlier
    try:
        return await _place(
            command=command,
            principal=principal,
            uow=uow,
            catalog=catalog,
            saga_mode=saga_mode,
            saga_runs_here=saga_runs_here,
        )
    except RequestAlreadyPlaced:
        # the same request, placed meanwhile by another transaction that committed first
        earlier = await _placed_earlier(uow, command, principal)
        if earlier is None:  # pragma: no cover - the conflict means the row exists
            raise
        return earlier


async def _placed_earlier(
    uow: AbstractUnitOfWork, command: CreateOrder, principal: Principal
) -> Order | None:
    """The order this request placed before, in a transaction of its own; None if none."""
    async with uow:
        placed = await uow.orders.placed_by_request(principal.user_id, command.request_id)
        if placed is None:
            return None
        if placed.fingerprint != command.fingerprint():
            raise RequestIdReused(command.request_id)
        order = await uow.orders.get(placed.order_id)
    if order is None:  # pragma: no cover - kept with the order, by a foreign key
        raise OrderNotFound(placed.order_id)
    set_span_attributes(order_id=order.id)
    return order


async def _place(
    *,
    command: CreateOrder,
    principal: Principal,
    uow: AbstractUnitOfWork,
    catalog: ProductCatalog,
    saga_mode: SagaMode,
    saga_runs_here: SagaRunsHere | None,
) -> Order:
    products = await catalog.batch_get_products(
        ids=[item.product_id for item in command.items], principal=principal
    )
    by_id = {product.id: product for product in products}
    lines = []
    for item in command.items:
        product = by_id.get(item.product_id)
        if product is None:
            raise ProductNotFound(item.product_id)
        lines.append(
            OrderLine(
                product_id=product.id,
                product_name=product.name,
                quantity=item.quantity,
                unit_price_cents=product.price_cents,
            )
        )
    saga: Saga | None = None
    # the customer's check and the order in one transaction, holding the customer: a
    # user.deleted handled meanwhile comes either before the check (which refuses the order)
    # or after the commit (and cancels the order with the customer's other pending ones)
    async with uow:
        await uow.customers.hold(principal.user_id, exclusive=False)
        known = await uow.customers.get(principal.user_id)
        if known is not None and known.deleted:
            raise CustomerDeleted()
        order = Order.place(
            order_id=new_id(),
            customer_id=principal.user_id,
            lines=lines,
            payment_token=command.payment_token,
            now=utc_now(),
            saga_mode=saga_mode,
        )
        set_span_attributes(order_id=order.id)
        await transitions.place(uow, order)
        if command.request_id:
            await uow.orders.remember_request(
                PlacedRequest(
                    customer_id=principal.user_id,
                    request_id=command.request_id,
                    order_id=order.id,
                    fingerprint=command.fingerprint(),
                )
            )
        if saga_mode is SagaMode.ORCHESTRATION:
            now = utc_now()
            saga = Saga.start(order_id=order.id, mode=saga_mode, step=SagaStep.RESERVE, now=now)
            if saga_runs_here is not None:
                worker, until = saga_runs_here.lease(now)
                saga.claim(worker=worker, until=until, now=now)
            await uow.sagas.add(saga)
        await uow.commit()
    if saga is not None and saga_runs_here is not None:
        saga_runs_here.adopt(saga, order)
    order.customer_name = known.full_name if known is not None else ""
    order.customer_email = known.email if known is not None else ""
    return order


async def get_order(*, order_id: str, principal: Principal, uow: AbstractUnitOfWork) -> Order:
    """The order, if the caller owns it or is an admin; NOT_FOUND otherwise."""
    validate_order_id(order_id)
    set_span_attributes(order_id=order_id)
    async with uow:
        order = await uow.orders.get(order_id)
    return _visible(order, order_id=order_id, principal=principal)


async def cancel_order(
    *, command: CancelOrder, principal: Principal, uow: AbstractUnitOfWork
) -> Order:
    """CANCELLED at once; the saga then gives the stock and any payment back."""
    validate_order_id(command.order_id)
    set_span_attributes(order_id=command.order_id)
    async with uow:
        order = _visible(
            await uow.orders.get(command.order_id, for_update=True),
            order_id=command.order_id,
            principal=principal,
        )
        if order.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED):
            raise IllegalTransition(order.status.value)
        reason = (
            "cancelled by customer"
            if principal.user_id == order.customer_id
            else "cancelled by admin"
        )
        await transitions.cancel(uow, order, reason=reason)
        await give_back(uow, order)
        await uow.commit()
    return order


def _visible(order: Order | None, *, order_id: str, principal: Principal) -> Order:
    if order is None or not order.is_visible_to(
        user_id=principal.user_id, is_admin=principal.is_admin
    ):
        raise OrderNotFound(order_id)
    return order
