"""The customer snapshot: what order_service keeps of a user, replicated from auth events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

ANONYMOUS_NAME = "Deleted customer"


def anonymous_email(customer_id: str) -> str:
    """A placeholder address (.invalid never resolves) that still tells deleted users apart."""
    return f"deleted-{customer_id}@anonymised.invalid"


@dataclass
class Customer:
    """A user as order_service last heard of them. `version_time` is the time of the event
    that wrote it, so an older event arriving late never overwrites a newer one."""

    id: str
    email: str
    full_name: str
    deleted: bool
    version_time: datetime

    def accepts(self, event_time: datetime) -> bool:
        """Whether a profile event of event_time may change this snapshot."""
        return not self.deleted and event_time >= self.version_time

    def anonymise(self, *, event_time: datetime) -> None:
        """The user deleted their account: forget who they were, for good."""
        self.email = anonymous_email(self.id)
        self.full_name = ANONYMOUS_NAME
        self.deleted = True
        self.version_time = max(self.version_time, event_time)

    @classmethod
    def deleted_user(cls, *, customer_id: str, event_time: datetime) -> Customer:
        """The snapshot of a user whose deletion is the first thing heard of them."""
        customer = cls(customer_id, "", "", deleted=False, version_time=event_time)
        customer.anonymise(event_time=event_time)
        return customer
