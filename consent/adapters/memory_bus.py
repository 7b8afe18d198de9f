"""The embedded default's event bus: committed events go to in-process subscribers, in order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from consent.app.ports import RecordedEvent

Subscriber = Callable[[list[RecordedEvent]], Awaitable[None]]


class InProcessBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    async def publish(self, events: list[RecordedEvent]) -> None:
        for subscriber in self._subscribers:
            await subscriber(events)
