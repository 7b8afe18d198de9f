"""A mapping bounded in size: when full, the least recently used entry goes first.

The caches that use it sit on hot paths (a decision reads the subject cache on every call), so
it is an `OrderedDict` itself, not a wrapper around one: `get`, `in`, `[]`, `pop`, `clear` and
`len` are the C methods, with no Python call in between. Reading does not count as a use by
itself: a caller that found an entry says so with `touch` (the same C `move_to_end` the inline
code called), so that a look that is not a use (a version check, a scan) costs nothing extra.
Assigning with `[]` changes an entry in place, which is not a use either; `put` is the use.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedLRU(OrderedDict[K, V], Generic[K, V]):
    """At most `capacity` entries; `put` adds or refreshes one as the most recently used."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.capacity = capacity

    # The entry was used: it goes last, furthest from eviction. KeyError if absent.
    touch = OrderedDict.move_to_end

    def put(self, key: K, value: V) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.capacity:
            self.popitem(last=False)
