"""In-memory stand-ins for the database: repositories and a unit of work with real rollback."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from product_service.adapters.repository import (
    AbstractProductRepository,
    AbstractReservationRepository,
)
from product_service.domain.errors import ReservationAlreadyExists, SkuAlreadyExists
from product_service.domain.model import Product, Reservation, ReservationStatus
from product_service.service_layer.unit_of_work import AbstractUnitOfWork


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass(frozen=True)
class RecordedEvent:
    event_type: str
    subject: str
    payload: Message


@dataclass
class Tables:
    products: dict[str, Product] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def copy(self) -> Tables:
        # Entities are frozen, so copying the dicts is enough to isolate a transaction.
        return Tables(dict(self.products), dict(self.reservations))

    def load(self, other: Tables) -> None:
        self.products = dict(other.products)
        self.reservations = dict(other.reservations)


class FakeDatabase:
    """The committed state, shared by every FakeUnitOfWork made from it."""

    def __init__(self) -> None:
        self.committed = Tables()
        self.commits = 0
        # The outbox: events of committed transactions, in order.
        self.events: list[RecordedEvent] = []
        # Runs just before a reservation is inserted: lets a test commit a competing row.
        self.before_reservation_add: Callable[[Reservation], None] | None = None

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self)


class FakeProductRepository(AbstractProductRepository):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[str, Product]:
        return self._uow.working.products

    async def add(self, product: Product) -> None:
        if any(p.sku == product.sku for p in self._rows.values()):
            raise SkuAlreadyExists(product.sku)
        self._rows[product.id] = product

    async def get(self, product_id: str, *, for_update: bool = False) -> Product | None:
        return self._rows.get(product_id)

    async def get_many(self, product_ids: Collection[str]) -> list[Product]:
        return [p for p in self._rows.values() if p.id in product_ids]

    async def list_after(self, *, after_id: str | None, limit: int) -> list[Product]:
        ordered = sorted(self._rows.values(), key=lambda p: p.id)
        return [p for p in ordered if after_id is None or p.id > after_id][:limit]

    async def update(self, product: Product, *, fields: Collection[str]) -> None:
        current = self._rows.get(product.id)
        if current is None:
            return
        if "sku" in fields and any(
            p.sku == product.sku and p.id != product.id for p in self._rows.values()
        ):
            raise SkuAlreadyExists(product.sku)
        changes = {name: getattr(product, name) for name in fields}
        self._rows[product.id] = replace(current, **changes, update_time=product.update_time)

    async def take_stock(self, product_id: str, quantity: int) -> bool:
        current = self._rows.get(product_id)
        if current is None or current.stock < quantity:
            return False
        self._rows[product_id] = replace(current, stock=current.stock - quantity)
        return True

    async def return_stock(self, product_id: str, quantity: int) -> None:
        current = self._rows[product_id]
        self._rows[product_id] = replace(current, stock=current.stock + quantity)

    async def is_empty(self) -> bool:
        return not self._rows


class FakeReservationRepository(AbstractReservationRepository):
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    @property
    def _rows(self) -> dict[str, Reservation]:
        return self._uow.working.reservations

    async def get(self, order_id: str) -> Reservation | None:
        return self._rows.get(order_id)

    async def add(self, reservation: Reservation) -> None:
        database = self._uow.database
        if database.before_reservation_add is not None:
            database.before_reservation_add(reservation)
        # Like a unique index, this sees rows other transactions committed meanwhile.
        if reservation.order_id in self._rows or (
            reservation.order_id in database.committed.reservations
        ):
            raise ReservationAlreadyExists(reservation.order_id)
        self._rows[reservation.order_id] = reservation

    async def change_status(
        self,
        order_id: str,
        *,
        expected: ReservationStatus,
        new: ReservationStatus,
        at: datetime,
    ) -> bool:
        current = self._rows.get(order_id)
        if current is None or current.status is not expected:
            return False
        self._rows[order_id] = replace(current, status=new, update_time=at)
        return True


class FakeUnitOfWork(AbstractUnitOfWork):
    def __init__(self, database: FakeDatabase) -> None:
        self.database = database
        self.working = database.committed.copy()
        self.pending_events: list[RecordedEvent] = []
        self.products = FakeProductRepository(self)
        self.reservations = FakeReservationRepository(self)

    async def __aenter__(self) -> FakeUnitOfWork:
        self.working.load(self.database.committed)
        self.pending_events = []
        return self

    async def commit(self) -> None:
        self.database.committed = self.working.copy()
        self.database.events.extend(self.pending_events)
        self.pending_events = []
        self.database.commits += 1

    async def rollback(self) -> None:
        self.working.load(self.database.committed)
        self.pending_events = []

    def record_event(self, *, event_type: str, subject: str, payload: Message) -> None:
        self.pending_events.append(RecordedEvent(event_type, subject, payload))
