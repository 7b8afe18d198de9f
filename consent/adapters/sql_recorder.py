"""The recorder on SQLAlchemy Core, shared by SQLite (consent/adapters/sqlite.py) and PostgreSQL
(consent/adapters/postgres.py): the statements both dialects take alike."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from consent.adapters.recorder import NOT_AUDITED, Recorder, SubjectHead
from consent.adapters.sql_reads import SUBJECT_STATE
from consent.adapters.sql_rows import consent_row, subject_row, subjects_from_rows
from consent.adapters.subject_keys import KeyRow, SubjectKeys, forget_subject, stored_keys
from consent.adapters.tables import consents, events, pseudonyms, subject_keys, subjects
from consent.adapters.write_record import SubjectWrite
from consent.domain.errors import VersionConflict
from consent.domain.streams import SUBJECT_PREFIX

if TYPE_CHECKING:
    from consent.adapters.sql_unit_of_work import SqlUnitOfWork

# A write's starting point in one indexed read: the state, the hash of the stream's last event (which
# the next one chains to) and the subject's data key, which seals personal fields.
_SUBJECT_FOR_WRITE = (
    SUBJECT_STATE.add_columns(events.c.hash.label("head_hash"))
    .outerjoin(events, sa.and_(events.c.stream_id == sa.literal(SUBJECT_PREFIX) + subjects.c.subject_id,
                               events.c.stream_version == subjects.c.version))
    .where(subjects.c.subject_id == sa.bindparam("subject_id"))
    .outerjoin(subject_keys, subject_keys.c.subject_id == subjects.c.subject_id)
    .add_columns(subject_keys.c.key_id, subject_keys.c.wrapped_key, subject_keys.c.master_key_id)
)


def version_conflict_from(error: IntegrityError, stream_id: str, expected_version: int) -> Exception:
    """A unique violation on (stream_id, stream_version) is someone else's append: a VersionConflict."""
    if "stream_version" in str(error.orig):
        return VersionConflict(stream_id, expected_version)
    return error


class SqlRecorder(Recorder):
    # The predicate of the partial index ix_events_audit, in the dialect's JSON syntax, so that it serves reads.
    AUDITED: sa.TextClause

    def __init__(self, unit: SqlUnitOfWork, keys: SubjectKeys) -> None:
        super().__init__(keys)
        self._unit = unit
        self._database = unit.database

    async def read_subject(self, subject_id: str) -> SubjectHead:
        conn = await self._unit.connection()
        rows = (await conn.execute(_SUBJECT_FOR_WRITE, {"subject_id": subject_id})).all()
        state = subjects_from_rows(rows, [subject_id])[subject_id]
        first = rows[0] if rows else None
        return SubjectHead(state, first.head_hash if first is not None else None,
                           KeyRow(first.key_id, first.wrapped_key, first.master_key_id)
                           if first is not None and first.key_id is not None else None)

    async def write_subject(self, write: SubjectWrite) -> list[int]:
        """In several statements; the unit of work's transaction makes them one."""
        positions = await self._insert(write.events)
        conn = await self._unit.connection()
        if write.new_key is not None:
            try:
                await conn.execute(sa.insert(subject_keys).values(
                    subject_id=write.subject_id, created_at=write.at, **write.new_key._asdict()))
            except IntegrityError:  # made by a writer that appended too: reload and retry
                raise VersionConflict(write.stream_id, write.expected_version) from None
        if write.pseudonyms:
            await conn.execute(self._database.upsert(pseudonyms).on_conflict_do_nothing(), [
                {"partner_id": p, "pseudonym": n, "subject_id": write.subject_id} for p, n in write.pseudonyms.items()])
        upsert = self._database.upsert(subjects).values(
            **subject_row(write.subject_id, write.version, positions[-1], write.global_opt_out))
        await conn.execute(upsert.on_conflict_do_update(
            index_elements=[subjects.c.subject_id],
            set_={"version": upsert.excluded.version, "position": upsert.excluded.position,
                  "global_opt_out": upsert.excluded.global_opt_out}))
        if write.erased:
            await conn.execute(sa.delete(consents).where(consents.c.subject_id == write.subject_id))
            # The data key goes (what it sealed is unreadable from now on), and the pseudonym mappings.
            await forget_subject(conn, write.subject_id)
            await conn.execute(sa.delete(pseudonyms).where(pseudonyms.c.subject_id == write.subject_id))
        if write.consents:
            upsert = self._database.upsert(consents)
            await conn.execute(upsert.on_conflict_do_update(
                index_elements=[consents.c.subject_id, consents.c.purpose_id, consents.c.partner_id],
                set_={c: upsert.excluded[c] for c in
                      ("scopes", "status", "expires_at", "purpose_version", "updated_at")}),
                [consent_row(write.subject_id, record) for record in write.consents])
        return positions

    async def stream_version(self, stream_id: str) -> int:
        conn = await self._unit.connection()
        return (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.stream_version), 0))
                                   .where(events.c.stream_id == stream_id))).scalar_one()

    async def _insert(self, rows: list[dict[str, Any]]) -> list[int]:
        conn = await self._unit.connection()
        statement = sa.insert(events).returning(events.c.position, sort_by_parameter_order=True)
        try:
            return list((await conn.execute(statement, rows)).scalars().all())
        except IntegrityError as error:
            raise version_conflict_from(error, rows[0]["stream_id"], rows[0]["stream_version"] - 1) from None

    async def _hash_at(self, stream_id: str, version: int) -> bytes | None:
        conn = await self._unit.connection()
        return (await conn.execute(sa.select(events.c.hash).where(
            events.c.stream_id == stream_id, events.c.stream_version == version))).scalar()

    async def _stream_rows(self, stream_id: str, after: int, limit: int) -> list[Any]:
        conn = await self._unit.connection()
        return list((await conn.execute(
            sa.select(events).where(events.c.stream_id == stream_id, events.c.position > after)
            .order_by(events.c.stream_version).limit(limit))).all())

    async def _rows_from(self, after: int, limit: int, audited: bool) -> list[Any]:
        conn = await self._unit.connection()
        query = sa.select(events).where(events.c.position > after).order_by(events.c.position).limit(limit)
        return list((await conn.execute(query.where(self.AUDITED) if audited else query)).all())

    async def _row_at(self, stream_id: str, position: int) -> Any:
        conn = await self._unit.connection()
        return (await conn.execute(sa.select(events).where(events.c.position == position,
                                                           events.c.stream_id == stream_id))).first()

    async def _key_rows(self, subject_ids: set[str] | list[str]) -> dict[str, KeyRow]:
        if not subject_ids:
            return {}
        return await stored_keys(await self._unit.connection(), subject_ids)


def audited_predicate(actor: str) -> sa.TextClause:
    """`<actor expression> NOT IN ('subject', 'system')`, the same text as the index's."""
    return sa.text(f"{actor} NOT IN ({', '.join(repr(a) for a in NOT_AUDITED)})")
