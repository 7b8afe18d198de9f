"""What the service holds on one subject, handed to the subject: the receipt of one of its events,
regenerated from the log, and the whole record as one document (data access and portability)."""

from __future__ import annotations

from collections.abc import Callable
from uuid import UUID

from consent.app.ports import Clock, RecordedEvent, UnitOfWork
from consent.app.receipts import ReceiptIssuer, has_receipt, scopes_that_matter
from consent.app.views import ReceiptView, SubjectExportView, history_event, subject_view
from consent.domain.catalog import Catalog
from consent.domain.errors import NotFound
from consent.domain.events import SubjectChange
from consent.domain.streams import PURPOSE, SCOPE, stream_of, subject_stream

PAGE = 1000


async def read_whole_stream(uow: UnitOfWork, stream_id: str) -> list[RecordedEvent]:
    recorded: list[RecordedEvent] = []
    after = 0
    while True:
        page = await uow.log.read_stream(stream_id, after, PAGE)
        recorded += page
        if len(page) < PAGE:
            return recorded
        after = page[-1].position


class CatalogAsSeen:
    """The catalog entities a receipt reads, as an event saw them, rebuilt from their own streams:
    the purpose at the version the event names, each scope as it stood at the event's position.
    Each stream is read once per instance."""

    def __init__(self, uow: UnitOfWork, current: Catalog) -> None:
        self._uow = uow
        self._current = current
        self._streams: dict[str, list[RecordedEvent]] = {}

    async def at(self, recorded: RecordedEvent) -> Catalog:
        seen = Catalog()
        event = recorded.event
        if not isinstance(event, SubjectChange):
            return seen
        current = self._current.purposes.get(event.purpose)
        if current is not None and current.version == event.purpose_version:
            seen.purposes[event.purpose] = current  # what receipts read of a purpose is fixed per version
        else:
            for item in await self._stream(stream_of(PURPOSE, event.purpose)):
                seen.apply(item.event)
                if getattr(item.event, "version", None) == event.purpose_version:
                    break
        for scope_id in scopes_that_matter(self._current, event.scopes):
            for item in await self._stream(stream_of(SCOPE, scope_id)):
                if item.position > recorded.position:
                    break
                seen.apply(item.event)
        return seen

    async def _stream(self, stream_id: str) -> list[RecordedEvent]:
        if stream_id not in self._streams:
            self._streams[stream_id] = await read_whole_stream(self._uow, stream_id)
        return self._streams[stream_id]


class SubjectRecords:
    def __init__(self, unit_of_work: Callable[..., UnitOfWork], catalog: Callable[[], Catalog], clock: Clock,
                 issuer: ReceiptIssuer) -> None:
        self._unit_of_work = unit_of_work
        self._catalog = catalog
        self._clock = clock
        self._issuer = issuer

    async def receipt(self, subject_id: str, event_id: UUID) -> ReceiptView:
        """The receipt of one of this subject's events; another subject's event is not found here."""
        async with self._unit_of_work() as uow:
            recorded = next((r for r in await read_whole_stream(uow, subject_stream(subject_id))
                             if r.event_id == event_id), None)
            if recorded is None or not has_receipt(recorded):
                raise NotFound("receipt", str(event_id))
            catalog = await CatalogAsSeen(uow, self._catalog()).at(recorded)
        return self._issuer.receipt(recorded, catalog)

    async def export(self, subject_id: str) -> SubjectExportView:
        """Current state, full history and receipts. The history is read a page per transaction, so
        that a long one does not hold up writers, and cut at the state's version, so that the parts
        of the document agree with each other."""
        now = self._clock.now()
        async with self._unit_of_work() as uow:
            state = await uow.subjects.load(subject_id)
        history: list[RecordedEvent] = []
        after = 0
        while state.version > 0:
            async with self._unit_of_work() as uow:
                page = await uow.log.read_stream(subject_stream(subject_id), after, PAGE)
            history += [r for r in page if r.stream_version <= state.version]
            if len(page) < PAGE or page[-1].stream_version >= state.version:
                break
            after = page[-1].position
        async with self._unit_of_work() as uow:
            as_seen = CatalogAsSeen(uow, self._catalog())
            receipts = [self._issuer.receipt(r, await as_seen.at(r)) for r in history if has_receipt(r)]
        return SubjectExportView(subject_id=subject_id, exported_at=now, consents=subject_view(state, now),
                                 history=[history_event(r) for r in history], receipts=receipts)
