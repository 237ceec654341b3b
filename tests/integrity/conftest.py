"""Fixtures of the integrity tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from baseline_setup import Setup, make_setup
from support import Guard
from watch_support import WAIT_SECONDS, Watch


@pytest.fixture
def setup(guard: Guard) -> Setup:
    """A config in the guard root that names one file of every watched kind."""
    return make_setup(guard)


@pytest.fixture
def watches() -> Iterator[list[Watch]]:
    """The watches a test starts; any still running at the end are killed."""
    started: list[Watch] = []
    yield started
    for watch in started:
        if watch.process.poll() is None:
            watch.process.kill()
            watch.process.wait(timeout=WAIT_SECONDS)
