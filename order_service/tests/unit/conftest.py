"""Fixtures of the unit tests: the service layer over fakes."""

from __future__ import annotations

import pytest

from .fakes import World


@pytest.fixture
def world() -> World:
    return World()
