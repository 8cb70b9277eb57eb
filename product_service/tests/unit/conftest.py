"""Fixtures over the in-memory fakes."""

from __future__ import annotations

import pytest
from product_service.service_layer.services import Dependencies
from tienda_platform.auth import Principal
from tienda_platform.ids import new_id

from .fakes import FakeClock, FakeDatabase


@pytest.fixture
def database() -> FakeDatabase:
    return FakeDatabase()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def deps(database: FakeDatabase, clock: FakeClock) -> Dependencies:
    return Dependencies(uow=database.uow, clock=clock)


@pytest.fixture
def admin() -> Principal:
    return Principal(user_id=new_id(), role="admin", token="unused")


@pytest.fixture
def customer() -> Principal:
    return Principal(user_id=new_id(), role="customer", token="unused")
