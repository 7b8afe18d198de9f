"""A durable JetStream consumer of the service's events, for internal subscribers (needs the `nats` extra).

Each event is acknowledged only after its handler returned: a crash in between redelivers it, so a
handler must tolerate seeing an event twice (deduplicate on `event.id`, or make the effect idempotent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from consent_client.errors import InvalidEvent
from consent_client.events import CloudEvent, decode_event

log = logging.getLogger("consent_client.jetstream")

STREAM = "CONSENT"
EVERY_EVENT = "consent.v1.>"


class RejectEvent(Exception):
    """Raised by a handler for an event it can never process: terminated, never redelivered.
    Any other exception is taken as passing, and the event comes back after `retry_delay`."""


class Delivery:
    """One event and the JetStream message that carried it, to settle by hand."""

    def __init__(self, event: CloudEvent, message: Msg) -> None:
        self.event = event
        self._message = message

    @property
    def attempt(self) -> int:
        """1 on first delivery, 2 on the first redelivery, ..."""
        return self._message.metadata.num_delivered

    async def ack(self) -> None:
        await self._message.ack()

    async def retry(self, delay: float | None = None) -> None:
        await self._message.nak(delay=delay)

    async def reject(self) -> None:
        await self._message.term()


class EventSubscriber:
    """A durable pull consumer `durable` on `stream`, filtered to `subject` (a NATS wildcard such as
    `consent.v1.subject.*.*.acme` for one partner's subject events). After a restart it resumes after
    the last event acknowledged. `max_deliver` bounds the attempts of an event that keeps failing;
    `ack_wait` is how long a handler may take before JetStream sends the event again."""

    def __init__(self, js: JetStreamContext, durable: str, *, stream: str = STREAM, subject: str = EVERY_EVENT,
                 batch: int = 50, fetch_timeout: float = 2.0, retry_delay: float = 5.0, max_deliver: int = 10,
                 ack_wait: float = 30.0) -> None:
        self._js = js
        self._durable = durable
        self._stream = stream
        self._subject = subject
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._retry_delay = retry_delay
        self._config = ConsumerConfig(durable_name=durable, ack_policy=AckPolicy.EXPLICIT, max_deliver=max_deliver,
                                      ack_wait=ack_wait, filter_subject=subject)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Finish the event in hand, hand the rest of the batch back, and return from `run`."""
        self._stopping.set()

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """Each event as it arrives, to acknowledge by hand. A payload that is no CloudEvent is
        terminated here (no handler could ever process it) and logged by its stream sequence."""
        subscription = await self._js.pull_subscribe(self._subject, durable=self._durable, stream=self._stream,
                                                     config=self._config)
        try:
            while not self._stopping.is_set():
                try:
                    messages = await subscription.fetch(batch=self._batch, timeout=self._fetch_timeout)
                except nats.errors.TimeoutError:
                    continue
                for index, message in enumerate(messages):
                    if self._stopping.is_set():
                        # Handed back at once rather than after ack_wait: another instance may take them.
                        for unhandled in messages[index:]:
                            await unhandled.nak()
                        return
                    try:
                        event = decode_event(message.data)
                    except InvalidEvent:
                        log.warning("terminated a message that is no CloudEvent (stream sequence %s)",
                                    message.metadata.sequence.stream)
                        await message.term()
                        continue
                    yield Delivery(event, message)
        finally:
            await subscription.unsubscribe()

    async def run(self, handler: Callable[[CloudEvent], Awaitable[object]]) -> None:
        """Calls `handler` for each event until `stop()`: acknowledged once it returns, retried after
        `retry_delay` when it raises, dropped for good when it raises RejectEvent."""
        async for delivery in self.deliveries():
            event = delivery.event
            try:
                await handler(event)
            except RejectEvent:
                log.warning("handler rejected event %s (%s)", event.id, event.type)
                await delivery.reject()
            except Exception as error:  # noqa: BLE001 - any failure of the handler means "not done yet"
                # The event id and type only: the message may hold personal data.
                log.warning("handler failed on event %s (%s), attempt %d: %s", event.id, event.type,
                            delivery.attempt, type(error).__name__)
                await delivery.retry(self._retry_delay)
            else:
                await delivery.ack()
