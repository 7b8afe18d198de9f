"""The bounded LRU mapping the caches share: what counts as a use, and what goes first when full."""

from __future__ import annotations

import pytest

from consent.app.lru import BoundedLRU


def test_put_beyond_capacity_drops_the_least_recently_used():
    lru: BoundedLRU[str, int] = BoundedLRU(3)
    for n, key in enumerate("abcd"):
        lru.put(key, n)
    assert list(lru.items()) == [("b", 1), ("c", 2), ("d", 3)] and len(lru) == 3


def test_a_touched_entry_outlives_older_ones():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru.touch("a")
    lru.put("c", 3)
    assert list(lru) == ["a", "c"]


def test_put_of_a_known_key_refreshes_it_and_reading_alone_does_not():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1 and "a" in lru  # a look, not a use
    lru.put("b", 20)
    lru.put("c", 3)
    assert list(lru.items()) == [("b", 20), ("c", 3)]


def test_assignment_changes_an_entry_in_place_without_making_it_recent():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    lru["a"] = 10
    lru.put("c", 3)
    assert list(lru.items()) == [("b", 2), ("c", 3)]


def test_pop_clear_and_touching_an_absent_key():
    lru: BoundedLRU[str, int] = BoundedLRU(2)
    lru.put("a", 1)
    assert lru.pop("a") == 1 and lru.pop("a", None) is None
    with pytest.raises(KeyError):
        lru.touch("a")
    lru.put("b", 2)
    lru.clear()
    assert len(lru) == 0 and lru.capacity == 2


def test_capacity_zero_keeps_nothing():
    lru: BoundedLRU[str, int] = BoundedLRU(0)
    lru.put("a", 1)
    assert len(lru) == 0
