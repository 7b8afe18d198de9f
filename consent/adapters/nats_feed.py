"""The replica feed: every process follows the JetStream stream and applies what others committed.

An ordered consumer per process, from the moment it starts (it loads its state from
the database just after subscribing, and version checks make repeats harmless).
Subject events fold into the cached states; a catalog event makes the process read
that entity again from the database, since events on NATS leave out private fields.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from uuid import UUID

import msgspec
import nats
from nats.js.api import DeliverPolicy

from consent.adapters.cloudevents import TYPE_PREFIX
from consent.adapters.nats_stream import StreamTarget, connect, ensure_stream
from consent.app.ports import RecordedEvent
from consent.domain.events import event_from_data
from consent.domain.streams import CATALOG_STREAMS, CREDENTIAL, SUBJECT, TOKEN, stream_kind, stream_of

log = logging.getLogger("consent.feed")


class _CloudEvent(msgspec.Struct):
    id: UUID
    type: str
    time: datetime
    subject: str
    data: dict
    pseudonymous: bool = False  # `subject` is a pairwise partner's pseudonym (see cloudevents.py)


_decode = msgspec.json.Decoder(_CloudEvent).decode


# Events a replica applies as they come; the catalog's are re-read (NATS leaves out private fields),
# the audit's concern no replica.
APPLIED = (SUBJECT, CREDENTIAL, TOKEN)


def recorded_from_message(payload: bytes) -> RecordedEvent:
    """The event a CloudEvent carries; `event` is None for events that are not APPLIED."""
    cloud = _decode(payload)
    tag = cloud.type.removeprefix(TYPE_PREFIX)
    aggregate = tag.split(".", 1)[0]  # an event type starts with its stream's kind
    data = dict(cloud.data)
    position, stream_version = data.pop("position"), data.pop("stream_version")
    event = event_from_data(tag, data) if aggregate in APPLIED else None
    return RecordedEvent(event_id=cloud.id, stream_id=stream_of(aggregate, cloud.subject),
                         stream_version=stream_version, position=position, event=event,
                         recorded_at=cloud.time,  # type: ignore[arg-type]
                         pseudonym=cloud.subject if cloud.pseudonymous else None)


class NatsFeed:
    def __init__(self, target: StreamTarget,
                 on_catalog_change: Callable[[str, int], Awaitable[None]],
                 on_events: Callable[[list[RecordedEvent]], Awaitable[None]],
                 on_resync: Callable[[], Awaitable[None]]) -> None:
        self._target = target
        self._stream = target.name
        self._prefix = target.subject_prefix
        self._on_catalog_change = on_catalog_change
        self._on_events = on_events
        self._on_resync = on_resync
        self._nc: nats.NATS | None = None
        self.connected = False

    async def start(self) -> None:
        self._nc = await connect(self._target, "consent-feed", disconnected_cb=self._down, reconnected_cb=self._up)
        js = self._nc.jetstream()
        await ensure_stream(js, self._target)
        await js.subscribe(f"{self._prefix}.>", ordered_consumer=True, deliver_policy=DeliverPolicy.NEW,
                           cb=self._handle)
        self.connected = True

    async def stop(self) -> None:
        if self._nc is not None:
            await self._nc.close()

    async def _down(self) -> None:
        self.connected = False

    async def _up(self) -> None:
        # What was missed while away is in the database: start again from there.
        await self._on_resync()
        self.connected = True

    async def _handle(self, msg) -> None:
        try:
            recorded = recorded_from_message(msg.data)
            if stream_kind(recorded.stream_id) in CATALOG_STREAMS:
                # Before the position moves: an answer at this position must see the change.
                await self._on_catalog_change(recorded.stream_id, recorded.stream_version)
            await self._on_events([recorded])
        except Exception as error:  # noqa: BLE001 - one bad message must not stop the feed
            log.warning("feed could not apply a message (%s)", type(error).__name__)
