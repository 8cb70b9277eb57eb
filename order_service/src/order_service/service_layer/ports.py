"""The other systems an order depends on, as the service layer sees them.

Adapters implement these against product_service and a payment provider; tests use fakes.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from tienda_platform.auth import Principal

if TYPE_CHECKING:
    from order_service.domain.model import Order
    from order_service.domain.saga import Saga


class SagaRunsHere(Protocol):
    """This process's saga worker, which runs the saga of an order placed here at once."""

    def lease(self, now: datetime) -> tuple[str, datetime]:
        """The claim to store the new saga with: the worker, and until when."""

    def adopt(self, saga: Saga, order: Order) -> None:
        """Run the saga, stored with that claim, from its stored state."""


@dataclass(frozen=True)
class ProductSnapshot:
    """What an order copies from the catalogue when it is placed."""

    id: str
    name: str
    price_cents: int


@dataclass(frozen=True)
class StockLine:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class Reservation:
    """The answer to a stock reservation: reserved, or rejected with a reason."""

    reserved: bool
    reason: str = ""


class ProductCatalog(abc.ABC):
    """Products and stock, owned by product_service.

    Reading products acts for the calling user (`principal`); the stock methods are
    product_service's internal RPCs and act as order_service itself (a service token).
    Failures to reach product_service raise tienda_platform.errors.Unavailable or
    DeadlineExceeded.
    """

    @abc.abstractmethod
    async def batch_get_products(
        self, *, ids: Sequence[str], principal: Principal
    ) -> list[ProductSnapshot]:
        """The products among ids that exist; unknown ids are left out."""

    @abc.abstractmethod
    async def reserve_stock(self, *, order_id: str, lines: Sequence[StockLine]) -> Reservation:
        """Take stock for every line, all or nothing; idempotent by order id."""

    @abc.abstractmethod
    async def release_stock(self, *, order_id: str) -> None:
        """Give the order's reserved or committed stock back; idempotent by order id."""

    @abc.abstractmethod
    async def commit_reservation(self, *, order_id: str) -> None:
        """Make the order's reservation final; idempotent by order id."""


@dataclass(frozen=True)
class ChargeResult:
    approved: bool
    provider_reference: str


class PaymentProvider(abc.ABC):
    """Takes and gives back money. Both calls are idempotent by their idempotency key."""

    @abc.abstractmethod
    async def charge(
        self, *, token: str, amount_cents: int, idempotency_key: str, answer_within: float
    ) -> ChargeResult:
        """Charge the payment method behind token; TimeoutError when the provider gives no
        answer within answer_within seconds (the bound on the round trip to the provider, as an
        HTTP client's timeout would be; the provider's own bookkeeping is not ours to time)."""

    @abc.abstractmethod
    async def refund(
        self, *, charge_reference: str, amount_cents: int, idempotency_key: str
    ) -> str:
        """Refund a charge; the refund's provider reference."""
