"""Replaying a partner's events to one webhook: the log after a position, routed as the dispatcher routes it,
up to the dispatcher's own cursor (what lies beyond, it delivers anyway). Events the webhook still has an
undelivered delivery of are skipped; delivered ones are delivered again, under the same `webhook-id`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.log_tail import load_cursor, recorded_from_row
from consent.adapters.tables import events, pseudonyms
from consent.adapters.webhook_dispatch import CURSOR, Router
from consent.adapters.webhook_ledger import DeliveryLedger, enqueue

PAGE = 500
MOST_EVENTS = 10_000  # looked at per request: a partner replays a long history in several calls


class Replayer:
    def __init__(self, database: Database, ledger: DeliveryLedger, router: Router) -> None:
        self._database = database
        self._ledger = ledger
        self._router = router

    async def __call__(self, endpoint: Any, after_position: int) -> tuple[int, int, bool]:
        """(deliveries enqueued, last position looked at, whether it reached the dispatcher's cursor)."""
        async with self._database.reading() as conn:
            _, until = await load_cursor(conn, CURSOR)
        pending = await self._ledger.undelivered_events(endpoint.id)
        enqueued, position = 0, after_position
        while position < until and position - after_position < MOST_EVENTS:
            async with self._database.reading() as conn:
                rows = (await conn.execute(
                    sa.select(events.c.position, events.c.event_id, events.c.stream_id, events.c.stream_version,
                              events.c.type, events.c.data, events.c.metadata, events.c.recorded_at)
                    .where(events.c.position > position, events.c.position <= until)
                    .order_by(events.c.position).limit(PAGE))).all()
            if not rows:
                position = until
                break
            batch = [recorded_from_row(row) for row in rows]
            async with self._ledger.transaction() as conn:
                deliveries, mappings = await self._router.route(conn, batch, [endpoint], datetime.now(UTC), replay=True)
                fresh = [d for d in deliveries if d["event_id"] not in pending]
                await enqueue(conn, fresh)
                if mappings:  # a pairwise partner can ask about the pseudonyms it is sent
                    await conn.execute(self._database.upsert(pseudonyms).on_conflict_do_nothing(), mappings)
            enqueued += len(fresh)
            position = batch[-1].position
        return enqueued, position, position >= until
