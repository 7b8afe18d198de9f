"""The event store and its projections on SQLAlchemy Core: a few hand-written statements per write."""

from __future__ import annotations

import functools
import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.tables import consents, events, idempotency_keys, partners, purposes, scopes, subjects
from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import Conflict, VersionConflict
from consent.domain.events import Event, SubjectChange, SubjectErased, event_data, event_from_data, event_type
from consent.domain.subject import ConsentRecord, SubjectConsents

_encode_json = msgspec.json.Encoder().encode

_SUBJECT_STATE = (
    sa.select(subjects.c.subject_id, subjects.c.version, subjects.c.position, subjects.c.global_opt_out,
              consents.c.purpose_id, consents.c.partner_id, consents.c.scopes, consents.c.status,
              consents.c.expires_at, consents.c.purpose_version, consents.c.updated_at)
    .select_from(subjects.outerjoin(consents, consents.c.subject_id == subjects.c.subject_id))
)
_SUBJECTS_BY_ANY = _SUBJECT_STATE.where(
    subjects.c.subject_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String))))


def subject_stream(subject_id: str) -> str:
    return f"subject:{subject_id}"


def subjects_from_rows(rows: list[Any], wanted: list[str]) -> dict[str, SubjectConsents]:
    """Fold (subject, consent) join rows into states; subjects without rows are new."""
    states = {subject_id: SubjectConsents(subject_id) for subject_id in wanted}
    for row in rows:
        state = states[row.subject_id]
        state.version, state.position, state.global_opt_out = row.version, row.position, row.global_opt_out
        if row.purpose_id is not None:
            partner = row.partner_id or None
            state.records[(row.purpose_id, partner)] = ConsentRecord(
                purpose=row.purpose_id, partner=partner,
                scopes=tuple(row.scopes) if row.scopes is not None else None,
                status=row.status, expires_at=row.expires_at, purpose_version=row.purpose_version,
                updated_at=row.updated_at,
            )
    return states


async def load_subjects(conn: AsyncConnection, subject_ids: list[str]) -> dict[str, SubjectConsents]:
    """Many subjects' states in one indexed read."""
    if conn.dialect.name == "postgresql":
        # One statement for any number of ids (IN would compile anew for every count).
        rows = (await conn.execute(_SUBJECTS_BY_ANY, {"ids": subject_ids})).all()
    else:
        rows = (await conn.execute(_SUBJECT_STATE.where(subjects.c.subject_id.in_(subject_ids)))).all()
    return subjects_from_rows(rows, subject_ids)


async def load_catalog(conn: AsyncConnection) -> tuple[Catalog, dict[str, int]]:
    """The catalog, and the stream version each of its entities was read at."""
    catalog = Catalog()
    versions: dict[str, int] = {}
    for row in (await conn.execute(sa.select(purposes))).mappings():
        catalog.purposes[row["id"]] = _purpose(row)
        versions[f"purpose:{row['id']}"] = row["stream_version"]
    for row in (await conn.execute(sa.select(scopes))).mappings():
        catalog.scopes[row["id"]] = _scope(row)
        versions[f"scope:{row['id']}"] = row["stream_version"]
    for row in (await conn.execute(sa.select(partners))).mappings():
        catalog.partners[row["id"]] = _partner(row)
        versions[f"partner:{row['id']}"] = row["stream_version"]
    return catalog, versions


async def head_position(conn: AsyncConnection) -> int:
    return (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0)))).scalar_one()


def _purpose(row: Any) -> Purpose:
    return Purpose(id=row["id"], title=row["title"], description=row["description"],
                   legal_basis=row["legal_basis"], retention=row["retention"],
                   sale_or_sharing=row["sale_or_sharing"], version=row["version"],
                   reconsent_below=row["reconsent_below"], status=row["status"])


def _scope(row: Any) -> Scope:
    return Scope(id=row["id"], title=row["title"], description=row["description"], sensitivity=row["sensitivity"])


def _partner(row: Any) -> Partner:
    return Partner(id=row["id"], name=row["name"], status=row["status"],
                   data_uses={k: tuple(v) for k, v in row["data_uses"].items()},
                   contract_ends_at=row["contract_ends_at"], base_status=row["base_status"])


def _json(value: Any) -> str | None:
    return None if value is None else _encode_json(value).decode()


@functools.lru_cache(maxsize=64)
def _one_statement_save(event_count: int, consent_count: int) -> sa.TextClause:
    appended = ", ".join(
        f"(:id{n}, :stream_id, :v{n}, :t{n}, CAST(:d{n} AS jsonb), CAST(:metadata AS jsonb), :now)"
        for n in range(event_count))
    sql = f"""
        WITH appended AS (
            INSERT INTO events (event_id, stream_id, stream_version, type, data, metadata, recorded_at)
            VALUES {appended} RETURNING position, stream_version),
        subject AS (
            INSERT INTO subjects (subject_id, version, position, global_opt_out)
            SELECT CAST(:subject_id AS varchar), CAST(:version AS integer), max(position),
                   CAST(:opt_out AS boolean) FROM appended
            ON CONFLICT (subject_id) DO UPDATE SET version = EXCLUDED.version, position = EXCLUDED.position,
                global_opt_out = EXCLUDED.global_opt_out)"""
    if consent_count:
        rows = ", ".join(
            f"(:subject_id, :p{n}, :q{n}, CAST(:s{n} AS jsonb), :st{n}, :e{n}, :pv{n}, :u{n})"
            for n in range(consent_count))
        sql += f""",
        consent AS (
            INSERT INTO consents (subject_id, purpose_id, partner_id, scopes, status, expires_at,
                                  purpose_version, updated_at)
            VALUES {rows}
            ON CONFLICT (subject_id, purpose_id, partner_id) DO UPDATE SET scopes = EXCLUDED.scopes,
                status = EXCLUDED.status, expires_at = EXCLUDED.expires_at,
                purpose_version = EXCLUDED.purpose_version, updated_at = EXCLUDED.updated_at)"""
    return sa.text(sql + "\n        SELECT position FROM appended ORDER BY stream_version")


def subject_row(state: SubjectConsents) -> dict[str, Any]:
    return {"subject_id": state.subject_id, "version": state.version, "position": state.position,
            "global_opt_out": state.global_opt_out}


def consent_row(subject_id: str, r: ConsentRecord) -> dict[str, Any]:
    return {"subject_id": subject_id, "purpose_id": r.purpose, "partner_id": r.partner or "",
            "scopes": list(r.scopes) if r.scopes is not None else None, "status": r.status,
            "expires_at": r.expires_at, "purpose_version": r.purpose_version, "updated_at": r.updated_at}


def catalog_row(entity: Purpose | Scope | Partner, stream_version: int) -> tuple[sa.Table, dict[str, Any]]:
    """The read-model table and row of a catalog entity."""
    if isinstance(entity, Purpose):
        return purposes, dict(
            id=entity.id, title=entity.title, description=entity.description, legal_basis=entity.legal_basis,
            retention=entity.retention, sale_or_sharing=entity.sale_or_sharing, version=entity.version,
            reconsent_below=entity.reconsent_below, status=entity.status, stream_version=stream_version)
    if isinstance(entity, Scope):
        return scopes, dict(id=entity.id, title=entity.title, description=entity.description,
                            sensitivity=entity.sensitivity, stream_version=stream_version)
    return partners, dict(
        id=entity.id, name=entity.name, status=entity.status, base_status=entity.base_status,
        data_uses={k: list(v) for k, v in entity.data_uses.items()}, contract_ends_at=entity.contract_ends_at,
        stream_version=stream_version)


class SqlUnitOfWork:
    """One database transaction; see `consent.app.ports.UnitOfWork`."""

    def __init__(self, database: Database, single_write: bool = False) -> None:
        self._database = database
        # One save, and on PostgreSQL a save is one statement: atomic without a transaction,
        # which spares the BEGIN and COMMIT round trips on the write hot path.
        self._autocommit = single_write and not database.is_sqlite
        self._committed = False
        self.conn: AsyncConnection

    async def __aenter__(self) -> SqlUnitOfWork:
        await self._database.acquire_writer()
        try:
            if self._autocommit:
                self.conn = await self._database.autocommit_engine.connect()
                self._committed = True
            else:
                self.conn = await self._database.engine.connect()
                await self.conn.begin()
        except BaseException:
            self._database.release_writer()
            raise
        return self

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if not self._committed:
                await self.conn.rollback()
        finally:
            try:
                await self.conn.close()
            finally:
                self._database.release_writer()

    async def commit(self) -> None:
        if not self._autocommit:
            await self.conn.commit()
        self._committed = True

    # The log

    async def _append(self, stream_id: str, expected_version: int, new_events: list[Event],
                      actor: str) -> list[RecordedEvent]:
        now = datetime.now(UTC)
        rows = [
            {"event_id": uuid.uuid4(), "stream_id": stream_id, "stream_version": expected_version + n,
             "type": event_type(event), "data": event_data(event), "metadata": {"actor": actor},
             "recorded_at": now}
            for n, event in enumerate(new_events, start=1)
        ]
        statement = sa.insert(events).returning(events.c.position, sort_by_parameter_order=True)
        try:
            positions = (await self.conn.execute(statement, rows)).scalars().all()
        except IntegrityError as error:
            if "stream_version" in str(error.orig):
                raise VersionConflict(stream_id, expected_version) from None
            raise
        return [
            RecordedEvent(event_id=row["event_id"], stream_id=stream_id, stream_version=row["stream_version"],
                          position=position, event=event, recorded_at=now)
            for row, position, event in zip(rows, positions, new_events, strict=True)
        ]

    async def read_stream(self, stream_id: str, after: int, limit: int) -> list[RecordedEvent]:
        query = (sa.select(events).where(events.c.stream_id == stream_id, events.c.position > after)
                 .order_by(events.c.stream_version).limit(limit))
        return [
            RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                          position=row.position, event=event_from_data(row.type, row.data),
                          recorded_at=row.recorded_at)
            for row in (await self.conn.execute(query)).all()
        ]

    # Subjects

    async def load_catalog(self) -> tuple[Catalog, dict[str, int]]:
        return await load_catalog(self.conn)

    async def load_subject(self, subject_id: str) -> SubjectConsents:
        return (await load_subjects(self.conn, [subject_id]))[subject_id]

    async def save_subject(self, state: SubjectConsents, expected_version: int, new_events: list[Event],
                           actor: str) -> list[RecordedEvent]:
        if not self._database.is_sqlite and not any(isinstance(e, SubjectErased) for e in new_events):
            return await self._save_subject_in_one_statement(state, expected_version, new_events, actor)
        recorded = await self._append(subject_stream(state.subject_id), expected_version, new_events, actor)
        state.position = recorded[-1].position
        upsert = self._database.upsert(subjects).values(**subject_row(state))
        await self.conn.execute(upsert.on_conflict_do_update(
            index_elements=[subjects.c.subject_id],
            set_={"version": upsert.excluded.version, "position": upsert.excluded.position,
                  "global_opt_out": upsert.excluded.global_opt_out}))
        await self._project_consents(state, new_events)
        return recorded

    async def _save_subject_in_one_statement(self, state: SubjectConsents, expected_version: int,
                                             new_events: list[Event], actor: str) -> list[RecordedEvent]:
        """PostgreSQL: the append and both projections as one statement (data-modifying CTEs)."""
        now = datetime.now(UTC)
        stream_id = subject_stream(state.subject_id)
        touched = sorted({(e.purpose, e.partner) for e in new_events if isinstance(e, SubjectChange)},
                         key=lambda k: (k[0], k[1] or ""))
        records = [state.records[key] for key in touched if key in state.records]
        params: dict[str, Any] = {"stream_id": stream_id, "subject_id": state.subject_id, "now": now,
                                  "version": state.version, "opt_out": state.global_opt_out,
                                  "metadata": _json({"actor": actor})}
        event_ids = []
        for n, event in enumerate(new_events):
            event_ids.append(uuid.uuid4())
            params.update({f"id{n}": event_ids[-1], f"v{n}": expected_version + n + 1,
                           f"t{n}": event_type(event), f"d{n}": _json(event_data(event))})
        for n, r in enumerate(records):
            row = consent_row(state.subject_id, r)
            params.update({f"p{n}": row["purpose_id"], f"q{n}": row["partner_id"], f"s{n}": _json(row["scopes"]),
                           f"st{n}": row["status"], f"e{n}": row["expires_at"], f"pv{n}": row["purpose_version"],
                           f"u{n}": row["updated_at"]})
        try:
            positions = list((await self.conn.execute(_one_statement_save(len(new_events), len(records)),
                                                      params)).scalars())
        except IntegrityError as error:
            if "stream_version" in str(error.orig):
                raise VersionConflict(stream_id, expected_version) from None
            raise
        state.position = positions[-1]
        return [RecordedEvent(event_id=event_id, stream_id=stream_id, stream_version=expected_version + n + 1,
                              position=position, event=event, recorded_at=now)
                for n, (event_id, position, event) in enumerate(zip(event_ids, positions, new_events, strict=True))]

    async def _project_consents(self, state: SubjectConsents, new_events: list[Event]) -> None:
        if any(isinstance(e, SubjectErased) for e in new_events):
            await self.conn.execute(sa.delete(consents).where(consents.c.subject_id == state.subject_id))
        touched = {(e.purpose, e.partner) for e in new_events if isinstance(e, SubjectChange)}
        rows = [consent_row(state.subject_id, r)
                for key in sorted(touched, key=lambda k: (k[0], k[1] or "")) if (r := state.records.get(key))]
        if rows:
            upsert = self._database.upsert(consents)
            await self.conn.execute(upsert.on_conflict_do_update(
                index_elements=[consents.c.subject_id, consents.c.purpose_id, consents.c.partner_id],
                set_={c: upsert.excluded[c] for c in
                      ("scopes", "status", "expires_at", "purpose_version", "updated_at")}), rows)

    async def claim_due_subjects(self, now: datetime, limit: int) -> list[str]:
        """Subjects with a grant past its expiry, locked so that no other process takes them too."""
        query = (sa.select(consents.c.subject_id)
                 .where(consents.c.status == "granted", consents.c.expires_at <= now)
                 .order_by(consents.c.expires_at).limit(limit).with_for_update(skip_locked=True))
        return list(dict.fromkeys((await self.conn.execute(query)).scalars()))

    async def claim_grants_of_terminated_partners(self, limit: int) -> list[tuple[str, str]]:
        """(subject, partner) pairs still granted to a terminated partner, locked likewise."""
        query = (sa.select(consents.c.subject_id, consents.c.partner_id)
                 .join(partners, partners.c.id == consents.c.partner_id)
                 .where(partners.c.status == "terminated", consents.c.status == "granted")
                 .limit(limit).with_for_update(skip_locked=True, of=consents))
        return list(dict.fromkeys((r.subject_id, r.partner_id) for r in await self.conn.execute(query)))

    # Catalog

    async def load_purpose(self, purpose_id: str) -> tuple[Purpose | None, int]:
        row = (await self.conn.execute(sa.select(purposes).where(purposes.c.id == purpose_id))).mappings().first()
        return (_purpose(row), row["stream_version"]) if row else (None, 0)

    async def load_scope(self, scope_id: str) -> tuple[Scope | None, int]:
        row = (await self.conn.execute(sa.select(scopes).where(scopes.c.id == scope_id))).mappings().first()
        return (_scope(row), row["stream_version"]) if row else (None, 0)

    async def load_partner(self, partner_id: str) -> tuple[Partner | None, int]:
        row = (await self.conn.execute(sa.select(partners).where(partners.c.id == partner_id))).mappings().first()
        return (_partner(row), row["stream_version"]) if row else (None, 0)

    async def save_catalog_entity(self, stream_id: str, expected_version: int, new_events: list[Event],
                                  entity: Purpose | Scope | Partner, actor: str) -> list[RecordedEvent]:
        recorded = await self._append(stream_id, expected_version, new_events, actor)
        table, row = catalog_row(entity, recorded[-1].stream_version)
        upsert = self._database.upsert(table).values(**row)
        await self.conn.execute(upsert.on_conflict_do_update(
            index_elements=[table.c.id], set_={c: upsert.excluded[c] for c in row if c != "id"}))
        return recorded

    # Idempotency

    async def idempotent_answer(self, key: str) -> tuple[str, Any] | None:
        row = (await self.conn.execute(
            sa.select(idempotency_keys.c.request_hash, idempotency_keys.c.response)
            .where(idempotency_keys.c.key == key))).first()
        return (row.request_hash, row.response) if row else None

    async def remember_answer(self, key: str, request_hash: str, answer: Any) -> None:
        try:
            await self.conn.execute(sa.insert(idempotency_keys).values(
                key=key, request_hash=request_hash, response=answer, created_at=datetime.now(UTC)))
        except IntegrityError:
            # Another request with this key committed first; this one rolls back whole.
            raise Conflict("idempotency_key_in_flight",
                           "a request with this Idempotency-Key was processed concurrently; retry it") from None


class SqlSubjectReader:
    """Reads for the decision path: one indexed query per batch of subjects."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def load_subjects(self, subject_ids: list[str]) -> dict[str, SubjectConsents]:
        async with self._database.reading() as conn:
            return await load_subjects(conn, subject_ids)

    async def head_position(self) -> int:
        async with self._database.reading() as conn:
            return await head_position(conn)
