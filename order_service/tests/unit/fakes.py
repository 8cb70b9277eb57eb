"""In-memory stand-ins for order_service's I/O boundaries."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message
from order_service.adapters.customer_repository import CustomerRepository
from order_service.adapters.repository import OrderRepository, PlacedRequest
from order_service.adapters.saga_repository import SagaRepository
from order_service.adapters.summary_repository import SummaryRepository
from order_service.domain.commands import CancelOrder, CreateOrder, RequestedItem
from order_service.domain.customers import Customer
from order_service.domain.errors import RequestAlreadyPlaced
from order_service.domain.model import Order, OrderLine, OrderStatus, SagaMode
from order_service.domain.saga import RetryPolicy, Saga
from order_service.domain.summary import OrderSummary
from order_service.service_layer import read_model, services
from order_service.service_layer.order_saga import SagaRunner
from order_service.service_layer.ports import (
    ChargeResult,
    PaymentProvider,
    ProductCatalog,
    ProductSnapshot,
    Reservation,
    StockLine,
)
from order_service.service_layer.saga_worker import SagaWorker
from order_service.service_layer.unit_of_work import AbstractUnitOfWork
from tienda_platform.auth import Principal
from tienda_platform.errors import FailedPrecondition, Unavailable
from tienda_platform.ids import new_id

T = TypeVar("T")


class FakeTable(Generic[T]):
    """A transaction's copy of one table: reads and writes copies, remembers what it wrote."""

    def __init__(self, committed: dict[str, T]) -> None:
        self.rows = copy.deepcopy(committed)
        self.touched: set[str] = set()

    def get(self, key: str) -> T | None:
        row = self.rows.get(key)
        return copy.deepcopy(row) if row is not None else None

    def put(self, key: str, row: T) -> None:
        self.rows[key] = copy.deepcopy(row)
        self.touched.add(key)

    def values(self) -> list[T]:
        return copy.deepcopy(list(self.rows.values()))


@dataclass
class RecordedEvent:
    event_type: str
    subject: str
    payload: Any
    time: datetime


@dataclass
class FakeDatabase:
    """What has been committed."""

    orders: dict[str, Order] = field(default_factory=dict)
    sagas: dict[str, Saga] = field(default_factory=dict)
    customers: dict[str, Customer] = field(default_factory=dict)
    summaries: dict[str, OrderSummary] = field(default_factory=dict)
    summary_customers: dict[str, Customer] = field(default_factory=dict)
    order_requests: dict[str, PlacedRequest] = field(default_factory=dict)
    events: list[RecordedEvent] = field(default_factory=list)

    def of_type(self, *event_types: str) -> list[RecordedEvent]:
        return [e for e in self.events if e.event_type in event_types]


class FakeOrderRepository(OrderRepository):
    def __init__(
        self,
        table: FakeTable[Order],
        customers: FakeTable[Customer],
        requests: FakeTable[PlacedRequest] | None = None,
    ) -> None:
        self.table = table
        self._customers = customers
        self._requests = requests if requests is not None else FakeTable({})

    async def add(self, order: Order) -> None:
        assert self.table.get(order.id) is None
        self.table.put(order.id, order)

    async def get(
        self, order_id: str, *, for_update: bool = False, in_mode: SagaMode | None = None
    ) -> Order | None:
        order = self.table.get(order_id)
        if order is not None and in_mode is not None and order.saga_mode is not in_mode:
            return None
        if order is not None:
            customer = self._customers.get(order.customer_id)
            order.customer_name = customer.full_name if customer is not None else ""
            order.customer_email = customer.email if customer is not None else ""
        return order

    async def save(self, order: Order) -> None:
        assert order.id in self.table.rows
        self.table.put(order.id, order)

    async def pending_of(self, customer_id: str) -> list[Order]:
        return [
            o
            for o in self.table.values()
            if o.customer_id == customer_id and o.status is OrderStatus.PENDING
        ]

    async def placed_by_request(self, customer_id: str, request_id: str) -> PlacedRequest | None:
        return self._requests.get(f"{customer_id} {request_id}")

    async def remember_request(self, placed: PlacedRequest) -> None:
        key = f"{placed.customer_id} {placed.request_id}"
        if self._requests.get(key) is not None:
            raise RequestAlreadyPlaced(placed.request_id)
        self._requests.put(key, placed)


class FakeSagaRepository(SagaRepository):
    def __init__(self, table: FakeTable[Saga]) -> None:
        self.table = table

    async def add(self, saga: Saga) -> None:
        assert self.table.get(saga.order_id) is None
        self.table.put(saga.order_id, saga)

    async def get(self, order_id: str, *, for_update: bool = False) -> Saga | None:
        return self.table.get(order_id)

    async def save(self, saga: Saga) -> None:
        self.table.put(saga.order_id, saga)

    async def claim_due(
        self, *, worker: str, now: datetime, until: datetime, limit: int
    ) -> list[str]:
        due = sorted(
            (s for s in self.table.values() if s.next_attempt_time and s.next_attempt_time <= now),
            key=lambda s: s.next_attempt_time or now,
        )[:limit]
        for saga in due:
            saga.claim(worker=worker, until=until, now=now)
            self.table.put(saga.order_id, saga)
        return [saga.order_id for saga in due]

    async def unclaim_all(self, *, worker: str, now: datetime) -> None:
        for saga in self.table.values():
            if saga.claimed_by == worker and saga.next_attempt_time is not None:
                saga.claimed_by, saga.next_attempt_time = "", now
                self.table.put(saga.order_id, saga)


class FakeCustomerRepository(CustomerRepository):
    def __init__(self, table: FakeTable[Customer]) -> None:
        self.table = table

    async def get(self, customer_id: str) -> Customer | None:
        return self.table.get(customer_id)

    async def save(self, customer: Customer) -> None:
        self.table.put(customer.id, customer)

    async def hold(self, customer_id: str, *, exclusive: bool) -> None:
        """Nothing to keep apart: the fakes' transactions do not interleave."""


class FakeSummaryRepository(SummaryRepository):
    def __init__(self, table: FakeTable[OrderSummary], customers: FakeTable[Customer]) -> None:
        self.table = table
        self.customers = customers

    async def get(self, order_id: str, *, for_update: bool = False) -> OrderSummary | None:
        summary = self.table.get(order_id)
        return self._named(summary) if summary is not None else None

    def _named(self, summary: OrderSummary) -> OrderSummary:
        customer = self.customers.get(summary.customer_id)
        summary.customer_name = customer.full_name if customer is not None else ""
        return summary

    async def save(self, summary: OrderSummary) -> None:
        self.table.put(summary.order_id, summary)

    async def list_newest_first(
        self, *, customer_id: str | None, before_id: str | None, limit: int
    ) -> list[OrderSummary]:
        found = [
            s
            for s in self.table.values()
            if (customer_id is None or s.customer_id == customer_id)
            and (before_id is None or s.order_id < before_id)
        ]
        newest = sorted(found, key=lambda s: s.order_id, reverse=True)[:limit]
        return [self._named(summary) for summary in newest]

    async def get_customer(self, customer_id: str) -> Customer | None:
        return self.customers.get(customer_id)

    async def save_customer(self, customer: Customer) -> None:
        self.customers.put(customer.id, customer)


class FakeUnitOfWork(AbstractUnitOfWork):
    """Each transaction works on copies; commit writes back only the rows it wrote."""

    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.commits = 0

    async def __aenter__(self) -> AbstractUnitOfWork:
        db = self.database
        self._tables: dict[str, FakeTable[Any]] = {
            "orders": FakeTable(db.orders),
            "sagas": FakeTable(db.sagas),
            "customers": FakeTable(db.customers),
            "summaries": FakeTable(db.summaries),
            "summary_customers": FakeTable(db.summary_customers),
            "order_requests": FakeTable(db.order_requests),
        }
        self.orders = FakeOrderRepository(
            self._tables["orders"], self._tables["customers"], self._tables["order_requests"]
        )
        self.sagas = FakeSagaRepository(self._tables["sagas"])
        self.customers = FakeCustomerRepository(self._tables["customers"])
        self.summaries = FakeSummaryRepository(
            self._tables["summaries"], self._tables["summary_customers"]
        )
        self._events: list[RecordedEvent] = []
        self._callbacks: list[Callable[[], None]] = []
        return await super().__aenter__()

    async def commit(self) -> None:
        for name, table in self._tables.items():
            committed = getattr(self.database, name)
            for key in table.touched:
                committed[key] = copy.deepcopy(table.rows[key])
            table.touched.clear()
        self.database.events += self._events
        self._events = []
        self.commits += 1
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()

    async def rollback(self) -> None:
        self._events = []
        self._callbacks = []

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> datetime:
        event = RecordedEvent(event_type, subject, payload, datetime.now(UTC))
        self._events.append(event)
        return event.time

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)


@dataclass
class FakeProduct:
    id: str
    name: str
    price_cents: int
    stock: int


@dataclass
class FakeReservation:
    lines: list[StockLine]
    state: str  # reserved, released or committed


@dataclass
class FakeProductCatalog(ProductCatalog):
    """A catalogue with stock and reservations by order id, like product_service's; a release
    of an unknown order leaves a released tombstone, as product_service does."""

    products: dict[str, FakeProduct] = field(default_factory=dict)
    reservations: dict[str, FakeReservation] = field(default_factory=dict)
    # Names of the methods that raise Unavailable, as when product_service is down.
    unavailable: set[str] = field(default_factory=set)
    refuse_commit: bool = False
    tokens: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)

    def add(self, product_id: str, *, name: str, price_cents: int, stock: int) -> None:
        self.products[product_id] = FakeProduct(product_id, name, price_cents, stock)

    def stock(self, product_id: str) -> int:
        return self.products[product_id].stock

    def calls_of(self, method: str) -> int:
        return self.calls.count(method)

    def _enter(self, method: str) -> None:
        self.calls.append(method)
        if method in self.unavailable:
            raise Unavailable("product service unavailable")

    async def batch_get_products(
        self, *, ids: Sequence[str], principal: Principal
    ) -> list[ProductSnapshot]:
        self._enter("batch_get_products")
        self.tokens.append(principal.token)
        return [
            ProductSnapshot(id=p.id, name=p.name, price_cents=p.price_cents)
            for i in ids
            if (p := self.products.get(i)) is not None
        ]

    async def reserve_stock(self, *, order_id: str, lines: Sequence[StockLine]) -> Reservation:
        self._enter("reserve_stock")
        if order_id in self.reservations:
            return Reservation(reserved=self.reservations[order_id].state != "released")
        for line in lines:
            product = self.products[line.product_id]
            if product.stock < line.quantity:
                return Reservation(reserved=False, reason=f"insufficient stock for {product.name}")
        for line in lines:
            self.products[line.product_id].stock -= line.quantity
        self.reservations[order_id] = FakeReservation(list(lines), "reserved")
        return Reservation(reserved=True)

    async def release_stock(self, *, order_id: str) -> None:
        self._enter("release_stock")
        reservation = self.reservations.setdefault(order_id, FakeReservation([], "released"))
        if reservation.state == "released":
            return
        for line in reservation.lines:
            self.products[line.product_id].stock += line.quantity
        reservation.state = "released"

    async def commit_reservation(self, *, order_id: str) -> None:
        self._enter("commit_reservation")
        if self.refuse_commit:
            raise FailedPrecondition("reservation expired")
        self.reservations[order_id].state = "committed"


class FakePaymentProvider(PaymentProvider):
    """tok_ok approved, tok_timeout never answers, tok_gated waits for `gate` then approves;
    others declined. With hold=True every charge waits for `gate` first. Answers are
    idempotent by key, like a real provider's."""

    def __init__(self, *, hold: bool = False) -> None:
        self.charges: list[tuple[str, int, str]] = []
        self.refunds: list[tuple[str, int, str]] = []
        self.charge_started = asyncio.Event()
        self.gate = asyncio.Event()
        self.hold = hold

    async def charge(
        self, *, token: str, amount_cents: int, idempotency_key: str, answer_within: float
    ) -> ChargeResult:
        self.charges.append((token, amount_cents, idempotency_key))
        self.charge_started.set()
        async with asyncio.timeout(answer_within):
            if token == "tok_timeout":
                await asyncio.get_running_loop().create_future()
            if token == "tok_gated" or self.hold:
                await self.gate.wait()
        approved = token in ("tok_ok", "tok_gated")
        return ChargeResult(approved=approved, provider_reference=f"ch_{idempotency_key}")

    async def refund(
        self, *, charge_reference: str, amount_cents: int, idempotency_key: str
    ) -> str:
        self.refunds.append((charge_reference, amount_cents, idempotency_key))
        return f"re_{idempotency_key}"


def customer(role: str = "customer") -> Principal:
    """A caller with an id and token of its own."""
    user_id = new_id()
    return Principal(user_id=user_id, role=role, token=f"token-of-{user_id}")


async def wait_until(condition: Callable[[], Any], *, within: float = 5.0) -> None:
    """Poll condition (sync or async) until it holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


@dataclass
class World:
    """The service layer over fakes, with two products in stock, and a saga worker."""

    mode: SagaMode = SagaMode.ORCHESTRATION
    payment_timeout: float = 5.0
    retry: RetryPolicy = field(default_factory=lambda: RetryPolicy(base_seconds=0.01))
    catalog: FakeProductCatalog = field(default_factory=FakeProductCatalog)
    payments: FakePaymentProvider = field(default_factory=FakePaymentProvider)
    db: FakeDatabase = field(default_factory=FakeDatabase)
    mug: str = field(default_factory=new_id)
    tea: str = field(default_factory=new_id)

    def __post_init__(self) -> None:
        self.catalog.add(self.mug, name="Mug", price_cents=1250, stock=10)
        self.catalog.add(self.tea, name="Tea", price_cents=499, stock=3)
        self.worker = self.new_worker("worker-1")

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.db)

    def new_worker(self, name: str, *, lease: timedelta = timedelta(seconds=30)) -> SagaWorker:
        runner = SagaRunner(
            uow_factory=self.uow,
            catalog=self.catalog,
            payments=self.payments,
            payment_timeout=self.payment_timeout,
            worker=name,
            lease=lease,
            retry=self.retry,
        )
        return SagaWorker(uow_factory=self.uow, runner=runner)

    def order(self, order_id: str) -> Order:
        return self.db.orders[order_id]

    def events_of(self, order_id: str) -> list[str]:
        return [e.event_type for e in self.db.events if e.subject == f"orders/{order_id}"]

    async def place(
        self,
        principal: Principal,
        token: str = "tok_ok",
        items: Sequence[tuple[str, int]] | None = None,
        request_id: str = "",
    ) -> Order:
        """CreateOrder: the order as it is answered (PENDING)."""
        command = CreateOrder(
            items=tuple(
                RequestedItem(product_id, quantity)
                for product_id, quantity in (items or [(self.mug, 2), (self.tea, 1)])
            ),
            payment_token=token,
            request_id=request_id,
        )
        return await services.create_order(
            command=command,
            principal=principal,
            uow=self.uow(),
            catalog=self.catalog,
            saga_mode=self.mode,
        )

    async def create(
        self,
        principal: Principal,
        token: str = "tok_ok",
        items: Sequence[tuple[str, int]] | None = None,
    ) -> Order:
        """CreateOrder, then the saga worker until nothing is due: the order as it ended."""
        placed = await self.place(principal, token, items)
        await self.worker.drain()
        return self.order(placed.id)

    async def cancel(self, principal: Principal, order_id: str) -> Order:
        return await services.cancel_order(
            command=CancelOrder(order_id), principal=principal, uow=self.uow()
        )

    async def get(self, principal: Principal, order_id: str) -> Order:
        return await services.get_order(order_id=order_id, principal=principal, uow=self.uow())

    async def project(self) -> None:
        """Feed every recorded order event to the read model, as its consumer would."""
        for event in self.db.of_type(
            "order.created", "order.confirmed", "order.cancelled", "order.rejected"
        ):
            await project_event(self.uow(), event)

    async def list(
        self, principal: Principal, *, page_size: int = 0, page_token: str = ""
    ) -> read_model.SummaryPage:
        await self.project()
        return await read_model.list_orders(
            page_size=page_size, page_token=page_token, principal=principal, uow=self.uow()
        )


async def project_event(uow: AbstractUnitOfWork, event: RecordedEvent) -> None:
    """One order event into the read model, as the order_read_model group does it."""
    payload = event.payload
    if event.event_type == "order.created":
        await read_model.order_created(
            uow=uow,
            order_id=payload.order_id,
            customer_id=payload.customer_id,
            lines=[
                OrderLine(li.product_id, li.product_name, li.quantity, li.unit_price_cents)
                for li in payload.lines
            ],
            total_cents=payload.total_cents,
            event_time=event.time,
        )
    else:
        await read_model.order_status_changed(
            uow=uow,
            order_id=payload.order_id,
            customer_id=payload.customer_id,
            status=OrderStatus(payload.status.removeprefix("ORDER_STATUS_")),
            reason=payload.reason,
            total_cents=payload.total_cents,
            event_time=event.time,
        )
