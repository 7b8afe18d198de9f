"""The per-subject write locks: writers to one key take turns, other keys do not wait, nothing is kept after."""

from __future__ import annotations

import asyncio

import pytest

from consent.app.writing import KeyedLocks


async def test_holders_of_one_key_take_turns_and_other_keys_do_not_wait():
    locks, order = KeyedLocks(), []

    async def writer(key: str, name: str, pause: float) -> None:
        async with locks.hold(key):
            order.append(f"{name} in")
            await asyncio.sleep(pause)
            order.append(f"{name} out")

    await asyncio.gather(writer("s", "a", 0.02), writer("s", "b", 0), writer("t", "c", 0))
    assert order.index("a out") < order.index("b in")  # b waited for a
    assert order.index("c in") < order.index("a out")  # c did not
    assert locks._locks == {}


async def test_a_waiter_cancelled_or_a_holder_failing_leaves_nothing_behind():
    locks = KeyedLocks()
    held = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("s"):
            held.set()
            await asyncio.sleep(0.05)
            raise RuntimeError("the write failed")

    async def waiter() -> None:
        async with locks.hold("s"):
            pass

    first = asyncio.create_task(holder())
    await held.wait()
    second = asyncio.create_task(waiter())
    await asyncio.sleep(0)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    with pytest.raises(RuntimeError):
        await first
    assert locks._locks == {}
