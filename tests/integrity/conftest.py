"""Fixtures of the integrity tests."""

from __future__ import annotations

import pytest
from baseline_setup import Setup, make_setup
from support import Guard


@pytest.fixture
def setup(guard: Guard) -> Setup:
    """A config in the guard root that names one file of every watched kind."""
    return make_setup(guard)
