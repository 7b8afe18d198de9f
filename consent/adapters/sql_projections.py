"""The projections a unit of work reads and writes beside the log, on SQLAlchemy Core (both dialects):
the catalog's tables, the subjects' claims for the scheduler, and idempotent answers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from consent.adapters.recorder import Recorder
from consent.adapters.sql_reads import load_catalog
from consent.adapters.sql_rows import CATALOG_TABLES, catalog_row
from consent.adapters.tables import consents, events, idempotency_keys, partners
from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import idempotency_key_in_flight
from consent.domain.events import Event

if TYPE_CHECKING:
    from consent.adapters.sql_unit_of_work import SqlUnitOfWork


class SqlCatalog:
    def __init__(self, unit: SqlUnitOfWork, recorder: Recorder) -> None:
        self._unit = unit
        self._recorder = recorder

    async def load_all(self) -> tuple[Catalog, dict[str, int]]:
        return await load_catalog(await self._unit.connection())

    async def load(self, kind: str, ident: str) -> tuple[Any, int]:
        table, from_row = CATALOG_TABLES[kind]
        conn = await self._unit.connection()
        row = (await conn.execute(sa.select(table).where(table.c.id == ident))).mappings().first()
        return (from_row(row), row["stream_version"]) if row else (None, 0)

    async def head_position(self) -> int:
        """The position of the catalog's latest event: each entity's stream is at its row's stream_version,
        so it is one indexed lookup in the log per entity (a catalog holds hundreds, not millions)."""
        heads = sa.union_all(*(
            sa.select((sa.literal(f"{kind}:") + table.c.id).label("stream_id"), table.c.stream_version)
            for kind, (table, _) in CATALOG_TABLES.items())).subquery()
        query = (sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0))
                 .join_from(heads, events, sa.and_(events.c.stream_id == heads.c.stream_id,
                                                   events.c.stream_version == heads.c.stream_version)))
        return (await (await self._unit.connection()).execute(query)).scalar_one()

    async def save(self, stream_id: str, expected_version: int, new_events: list[Event],
                   entity: Purpose | Scope | Partner, actor: str) -> list[RecordedEvent]:
        recorded = await self._recorder.append(stream_id, expected_version, new_events, actor)
        table, row = catalog_row(entity, recorded[-1].stream_version)
        upsert = self._unit.database.upsert(table).values(**row)
        await (await self._unit.connection()).execute(upsert.on_conflict_do_update(
            index_elements=[table.c.id], set_={c: upsert.excluded[c] for c in row if c != "id"}))
        return recorded


class SqlClaims:
    """Subjects the scheduler must write to, each locked so that no other process takes it too."""

    def __init__(self, unit: SqlUnitOfWork) -> None:
        self._unit = unit

    async def due(self, now: datetime, limit: int) -> list[str]:
        """Subjects with a grant past its expiry."""
        query = (sa.select(consents.c.subject_id)
                 .where(consents.c.status == "granted", consents.c.expires_at <= now)
                 .order_by(consents.c.expires_at).limit(limit).with_for_update(skip_locked=True))
        return list(dict.fromkeys((await (await self._unit.connection()).execute(query)).scalars()))

    async def grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        """(subject, partner) pairs still granted to a terminated partner."""
        query = (sa.select(consents.c.subject_id, consents.c.partner_id)
                 .join(partners, partners.c.id == consents.c.partner_id)
                 .where(partners.c.status == "terminated", consents.c.status == "granted")
                 .limit(limit).with_for_update(skip_locked=True, of=consents))
        rows = await (await self._unit.connection()).execute(query)
        return list(dict.fromkeys((r.subject_id, r.partner_id) for r in rows))


class SqlIdempotency:
    def __init__(self, unit: SqlUnitOfWork) -> None:
        self._unit = unit

    async def answer(self, key: str) -> tuple[str, Any] | None:
        """The (request hash, answer) first stored under `key`, if any."""
        row = (await (await self._unit.connection()).execute(
            sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response)
            .where(idempotency_keys.c.key == key))).first()
        return (row.request_hash, row.response) if row else None

    async def remember(self, key: str, request_hash: str, answer: Any) -> None:
        try:
            await (await self._unit.connection()).execute(sa.insert(idempotency_keys).values(
                key=key, request_hash=request_hash, response=answer, created_at=datetime.now(UTC)))
        except IntegrityError:
            raise idempotency_key_in_flight() from None
