"""The outside systems notifications reach: mail servers, webhook receivers, and DNS."""

from __future__ import annotations

import abc
from dataclasses import dataclass


class Mailer(abc.ABC):
    """Sends one email; raises MailerError (or OSError) when the server does not take it."""

    @abc.abstractmethod
    async def send(self, *, recipient: str, subject: str, body: str) -> None: ...


class MailerError(Exception):
    """The mail server refused or could not be reached."""


@dataclass(frozen=True)
class HttpOutcome:
    """What a webhook receiver answered: a status code, or 0 and the error when nothing came."""

    status_code: int
    error: str = ""

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


class WebhookSender(abc.ABC):
    @abc.abstractmethod
    async def post(
        self, *, url: str, address: str, headers: dict[str, str], body: str
    ) -> HttpOutcome:
        """POST body to url, connecting to `address` (the IP its host was checked to be)."""


class AddressResolver(abc.ABC):
    @abc.abstractmethod
    async def resolve(self, host: str, port: int) -> list[str]:
        """The IP addresses host resolves to; OSError when it does not resolve."""


@dataclass(frozen=True)
class Contact:
    """Where to write to a customer, as order_service's customer snapshot knows them."""

    email: str
    full_name: str
    deleted: bool


class CustomerContacts(abc.ABC):
    @abc.abstractmethod
    async def contact_of(self, customer_id: str) -> Contact | None:
        """The customer's contact, or None when no event about them has arrived yet."""
