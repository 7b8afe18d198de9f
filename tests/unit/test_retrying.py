"""`retrying`: a lost race is run again a few times; an unavailable store is waited for, within its patience."""

from __future__ import annotations

import time

import pytest

from consent.app.ports import StoreUnavailable
from consent.app.writing import ATTEMPTS, retrying
from consent.domain.errors import VersionConflict


def failing(times: int, error: Exception):
    calls = []

    async def attempt() -> int:
        calls.append(time.monotonic())
        if len(calls) <= times:
            raise error
        return len(calls)

    return attempt, calls


async def test_a_store_back_within_its_patience_costs_time_not_an_error():
    attempt, calls = failing(3, StoreUnavailable(patience=2.0))
    assert await retrying(attempt) == 4
    assert calls[-1] - calls[0] >= 0.05 + 0.1 + 0.2  # paused, doubling, between attempts


async def test_a_store_gone_longer_than_its_patience_is_given_up_on_time():
    attempt, calls = failing(1000, StoreUnavailable(patience=0.4))
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await retrying(attempt)
    assert 0.3 <= time.monotonic() - started <= 0.6
    assert len(calls) >= 3


async def test_an_unavailable_store_is_waited_for_even_when_conflicts_are_not_retried():
    attempt, calls = failing(1, StoreUnavailable(patience=1.0))
    assert await retrying(attempt, retry=False) == 2  # a write with If-Match cut off mid-way runs again


async def test_conflicts_are_retried_up_to_the_attempts_given():
    attempt, calls = failing(ATTEMPTS, VersionConflict("subject:a", 1))
    with pytest.raises(VersionConflict):
        await retrying(attempt)
    assert len(calls) == ATTEMPTS
    attempt, calls = failing(ATTEMPTS, VersionConflict("subject:a", 1))
    assert await retrying(attempt, attempts=ATTEMPTS + 1) == ATTEMPTS + 1
