"""The event store and its projections on SQLAlchemy Core: a few hand-written statements per write."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.subject_keys import (
    WITHOUT_MASTER_KEY,
    KeyRow,
    Sealer,
    SubjectKeys,
    forget_subject,
    has_personal_data,
    opened,
    sealed_subjects,
    sealer,
    stored_keys,
)
from consent.adapters.tables import consents, events, idempotency_keys, partners, purposes, scopes, subjects
from consent.adapters.tables import pseudonyms as pseudonyms_table
from consent.adapters.tables import subject_keys as subject_keys_table
from consent.adapters.write_batcher import (
    SUBJECT_APPEND,
    SubjectAppend,
    WriteBatcher,
    positions_by_stream,
    subject_append_params,
)
from consent.adapters.write_cache import SubjectWriteCache
from consent.app.ports import RecordedEvent
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.errors import Conflict, VersionConflict
from consent.domain.events import (
    Event,
    SubjectChange,
    SubjectErased,
    event_data,
    event_from_data,
    event_type,
    without_personal,
)
from consent.domain.hash_chain import GENESIS, event_hash
from consent.domain.streams import PARTNER, PURPOSE, SCOPE, SUBJECT_PREFIX, stream_of, subject_stream
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
# For a write: the state and the hash of the stream's last event, which the next one chains to,
# in the same indexed read (the decision path's reads above do without it).
_SUBJECT_FOR_WRITE = (
    _SUBJECT_STATE.add_columns(events.c.hash.label("head_hash"))
    .outerjoin(events, sa.and_(events.c.stream_id == sa.literal(SUBJECT_PREFIX) + subjects.c.subject_id,
                               events.c.stream_version == subjects.c.version))
    .where(subjects.c.subject_id == sa.bindparam("subject_id"))
    # ... and the subject's data key, which seals personal fields (consent/adapters/subject_keys.py).
    .outerjoin(subject_keys_table, subject_keys_table.c.subject_id == subjects.c.subject_id)
    .add_columns(subject_keys_table.c.key_id, subject_keys_table.c.wrapped_key, subject_keys_table.c.master_key_id)
)



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
        versions[stream_of(PURPOSE, row["id"])] = row["stream_version"]
    for row in (await conn.execute(sa.select(scopes))).mappings():
        catalog.scopes[row["id"]] = _scope(row)
        versions[stream_of(SCOPE, row["id"])] = row["stream_version"]
    for row in (await conn.execute(sa.select(partners))).mappings():
        catalog.partners[row["id"]] = _partner(row)
        versions[stream_of(PARTNER, row["id"])] = row["stream_version"]
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
                   contract_ends_at=row["contract_ends_at"], base_status=row["base_status"],
                   identifiers=row["identifiers"], rate_limit=row["rate_limit"])


def event_rows(previous_hash: bytes, stream_id: str, expected_version: int, new_events: list[Event],
               actor: str, now: datetime, pseudonyms: dict[str, str] | None = None,
               seal: Sealer | None = None) -> list[dict[str, Any]]:
    """The rows that append `new_events` to a stream, each hashed onto the one before.

    Every append goes through here, so that no row is written without its link in the chain.
    `pseudonyms` ({pairwise partner: pseudonym}) go into the metadata, for the relay to publish.
    `seal` encrypts personal fields before the hash, so that the chain covers what is stored.
    """
    metadata: dict[str, Any] = {"actor": actor, "pseudonyms": pseudonyms} if pseudonyms else {"actor": actor}
    rows = []
    for version, event in enumerate(new_events, start=expected_version + 1):
        event_id = uuid.uuid4()
        data = event_data(event) if seal is None else seal(event_data(event), stream_id, event_id)
        row = {"event_id": event_id, "stream_id": stream_id, "stream_version": version,
               "type": event_type(event), "data": data, "metadata": metadata,
               "recorded_at": now}
        row["hash"] = previous_hash = event_hash(
            previous_hash, stream_id, version, row["event_id"], row["type"], now, row["data"], row["metadata"])
        rows.append(row)
    return rows


def published_pseudonym(event: Event, metadata: dict[str, Any]) -> str | None:
    """What a subject event about a pairwise partner is published with instead of the subject id."""
    partner_id = getattr(event, "partner", None)
    return metadata.get("pseudonyms", {}).get(partner_id) if partner_id is not None else None


def _json(value: Any) -> str | None:
    return None if value is None else _encode_json(value).decode()


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
        identifiers=entity.identifiers, rate_limit=entity.rate_limit, stream_version=stream_version)


class SqlUnitOfWork:
    """One database transaction; see `consent.app.ports.UnitOfWork`."""

    def __init__(self, database: Database, single_write: bool = False, keys: SubjectKeys | None = None,
                 write_cache: SubjectWriteCache | None = None, batcher: WriteBatcher | None = None) -> None:
        self._database = database
        self._batcher = batcher  # group commit of single writes (PostgreSQL)
        self._keys = keys or WITHOUT_MASTER_KEY
        self._write_cache = write_cache
        # subject -> its state, head hash and key row after a save here: remembered once committed.
        self._saved: dict[str, tuple[SubjectConsents, bytes, KeyRow | None]] = {}
        # subject -> its data key row as read with its state (None: it has none).
        self._key_rows: dict[str, KeyRow | None] = {}
        # One save, and on PostgreSQL a save is one statement: atomic without a transaction,
        # which spares the BEGIN and COMMIT round trips on the write hot path.
        self._autocommit = single_write and not database.is_sqlite
        self._committed = False
        self._connected = False
        # stream -> (version, hash) of its last event as read or written here: what the next append chains to.
        self._stream_heads: dict[str, tuple[int, bytes]] = {}
        self.conn: AsyncConnection

    async def __aenter__(self) -> SqlUnitOfWork:
        await self._database.acquire_writer()
        try:
            if self._autocommit:
                self._committed = True  # connects on its first statement (_connect_for_autocommit)
            else:
                self.conn = await self._database.engine.connect()
                self._connected = True
                await self.conn.begin()
        except BaseException:
            self._database.release_writer()
            raise
        return self

    async def _connect_for_autocommit(self) -> None:
        """A single write answered from the write cache and sent by the batcher needs no connection of
        its own: one is taken only for a statement of this unit's."""
        if not self._connected:
            self.conn = await self._database.autocommit_engine.connect()
            self._connected = True

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._connected:
                if not self._committed:
                    await self.conn.rollback()
                await self.conn.close()
        finally:
            self._database.release_writer()

    async def commit(self) -> None:
        if not self._autocommit:
            await self.conn.commit()
        self._committed = True
        if self._write_cache is not None:
            for state, head_hash, key_row in self._saved.values():
                self._write_cache.put(state, head_hash, key_row)

    # The log

    async def _append(self, stream_id: str, expected_version: int, new_events: list[Event],
                      actor: str, pseudonyms: dict[str, str] | None = None,
                      seal: Sealer | None = None) -> list[RecordedEvent]:
        now = datetime.now(UTC)
        rows = event_rows(await self._previous_hash(stream_id, expected_version), stream_id, expected_version,
                          new_events, actor, now, pseudonyms, seal)
        statement = sa.insert(events).returning(events.c.position, sort_by_parameter_order=True)
        try:
            positions = (await self.conn.execute(statement, rows)).scalars().all()
        except IntegrityError as error:
            if "stream_version" in str(error.orig):
                raise VersionConflict(stream_id, expected_version) from None
            raise
        self._stream_heads[stream_id] = (rows[-1]["stream_version"], rows[-1]["hash"])
        return [
            RecordedEvent(event_id=row["event_id"], stream_id=stream_id, stream_version=row["stream_version"],
                          position=position, event=event, recorded_at=now,
                          pseudonym=published_pseudonym(event, row["metadata"]))
            for row, position, event in zip(rows, positions, new_events, strict=True)
        ]

    async def _previous_hash(self, stream_id: str, expected_version: int) -> bytes:
        """The hash of the stream's event at `expected_version`, read with the state if it was."""
        if expected_version == 0:
            return GENESIS
        head = self._stream_heads.get(stream_id)
        if head is not None and head[0] == expected_version:
            return head[1]
        await self._connect_for_autocommit()
        found = (await self.conn.execute(sa.select(events.c.hash).where(
            events.c.stream_id == stream_id, events.c.stream_version == expected_version))).scalar()
        if found is None:  # the stream is not where the caller read it: reload and retry
            raise VersionConflict(stream_id, expected_version)
        return found

    async def read_stream(self, stream_id: str, after: int, limit: int) -> list[RecordedEvent]:
        query = (sa.select(events).where(events.c.stream_id == stream_id, events.c.position > after)
                 .order_by(events.c.stream_version).limit(limit))
        rows = (await self.conn.execute(query)).all()
        return [
            RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                          position=row.position, event=event_from_data(row.type, data),
                          recorded_at=row.recorded_at)
            for row, data in zip(rows, await self._readable(rows), strict=True)
        ]

    async def event_at(self, stream_id: str, position: int) -> RecordedEvent | None:
        """One event of a stream, without its personal fields: for checks that must not need a key."""
        row = (await self.conn.execute(sa.select(events).where(events.c.position == position,
                                                               events.c.stream_id == stream_id))).first()
        if row is None:
            return None
        return RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                             position=row.position, event=event_from_data(row.type, without_personal(row.data)),
                             recorded_at=row.recorded_at)

    async def _readable(self, rows: list[Any]) -> list[dict[str, Any]]:
        """Each row's data with its personal fields opened, or `[erased]` where the subject's key is gone."""
        stored = await stored_keys(self.conn, sealed_subjects(rows))
        return [opened(self._keys, stored, row) for row in rows]

    async def append(self, stream_id: str, expected_version: int, new_events: list[Event],
                     actor: str) -> list[RecordedEvent]:
        """Append to a stream without a projection of its own (access, audit)."""
        return await self._append(stream_id, expected_version, new_events, actor)

    async def stream_version(self, stream_id: str) -> int:
        return (await self.conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.stream_version), 0))
                                        .where(events.c.stream_id == stream_id))).scalar_one()

    async def read_audit(self, after: int, limit: int) -> list[tuple[RecordedEvent, str]]:
        """What administrators and partners did, with who did it, oldest first."""
        # The same predicate as the partial index ix_events_audit, so that the index serves it.
        if self._database.is_sqlite:
            audited = sa.text("json_extract(metadata, '$.actor') NOT IN ('subject', 'system')")
        else:
            audited = sa.text("(metadata ->> 'actor') NOT IN ('subject', 'system')")
        query = (sa.select(events).where(audited, events.c.position > after)
                 .order_by(events.c.position).limit(limit))
        rows = (await self.conn.execute(query)).all()
        return [
            (RecordedEvent(event_id=row.event_id, stream_id=row.stream_id, stream_version=row.stream_version,
                           position=row.position, event=event_from_data(row.type, data),
                           recorded_at=row.recorded_at), row.metadata["actor"])
            for row, data in zip(rows, await self._readable(rows), strict=True)
        ]

    # Subjects

    async def load_catalog(self) -> tuple[Catalog, dict[str, int]]:
        return await load_catalog(self.conn)

    async def load_subject(self, subject_id: str, cached: bool = False) -> SubjectConsents:
        if cached and self._write_cache is not None:
            hit = self._write_cache.get(subject_id)
            if hit is not None:
                state, head_hash, self._key_rows[subject_id] = hit
                self._stream_heads[subject_stream(subject_id)] = (state.version, head_hash)
                return state
        await self._connect_for_autocommit()
        rows = (await self.conn.execute(_SUBJECT_FOR_WRITE, {"subject_id": subject_id})).all()
        state = subjects_from_rows(rows, [subject_id])[subject_id]
        if rows and rows[0].head_hash is not None:
            self._stream_heads[subject_stream(subject_id)] = (state.version, rows[0].head_hash)
        self._key_rows[subject_id] = (KeyRow(rows[0].key_id, rows[0].wrapped_key, rows[0].master_key_id)
                                      if rows and rows[0].key_id is not None else None)
        return state

    async def save_subject(self, state: SubjectConsents, expected_version: int, new_events: list[Event],
                           actor: str, pseudonyms: dict[str, str] | None = None) -> list[RecordedEvent]:
        # Until this commits, what the cache held of the subject may or may not be the stream's head.
        if self._write_cache is not None:
            self._write_cache.forget(state.subject_id)
        self._saved.pop(state.subject_id, None)
        recorded = await self._save_subject(state, expected_version, new_events, actor, pseudonyms)
        if state.subject_id in self._key_rows and not any(isinstance(e, SubjectErased) for e in new_events):
            self._saved[state.subject_id] = (state, self._stream_heads[subject_stream(state.subject_id)][1],
                                             self._key_rows[state.subject_id])
        return recorded

    async def _save_subject(self, state: SubjectConsents, expected_version: int, new_events: list[Event],
                            actor: str, pseudonyms: dict[str, str] | None) -> list[RecordedEvent]:
        seal, new_key = await self._sealing(state.subject_id, new_events)
        if not self._database.is_sqlite and not any(isinstance(e, SubjectErased) for e in new_events):
            return await self._save_subject_in_one_statement(state, expected_version, new_events, actor,
                                                             pseudonyms, seal, new_key)
        recorded = await self._append(subject_stream(state.subject_id), expected_version, new_events, actor,
                                      pseudonyms, seal)
        if new_key is not None:
            try:
                await self.conn.execute(sa.insert(subject_keys_table).values(**new_key))
            except IntegrityError:  # made by a writer that appended too: reload and retry
                raise VersionConflict(subject_stream(state.subject_id), expected_version) from None
        state.position = recorded[-1].position
        if pseudonyms:
            await self.conn.execute(self._database.upsert(pseudonyms_table).on_conflict_do_nothing(), [
                {"partner_id": p, "pseudonym": n, "subject_id": state.subject_id} for p, n in pseudonyms.items()])
        upsert = self._database.upsert(subjects).values(**subject_row(state))
        await self.conn.execute(upsert.on_conflict_do_update(
            index_elements=[subjects.c.subject_id],
            set_={"version": upsert.excluded.version, "position": upsert.excluded.position,
                  "global_opt_out": upsert.excluded.global_opt_out}))
        await self._project_consents(state, new_events)
        if any(isinstance(e, SubjectErased) for e in new_events):
            await self._forget(state.subject_id)
        return recorded

    async def _sealing(self, subject_id: str, new_events: list[Event]) -> tuple[Sealer | None, dict | None]:
        """How these events' personal fields are sealed, and the subject's new key row if it has none yet."""
        if not has_personal_data(new_events):
            return None, None
        if subject_id in self._key_rows:
            stored = self._key_rows[subject_id]
        else:
            await self._connect_for_autocommit()
            stored = (await stored_keys(self.conn, [subject_id])).get(subject_id)
        key, new_key = self._keys.for_write(subject_id, stored)
        if new_key is not None:  # what a later save in this unit of work must find (written with this one)
            self._key_rows[subject_id] = KeyRow(new_key["key_id"], new_key["wrapped_key"], new_key["master_key_id"])
        return sealer(key), new_key

    async def _forget(self, subject_id: str) -> None:
        """Erasure: the data key goes (what it sealed is unreadable from now on), and the pseudonym mappings."""
        await forget_subject(self.conn, subject_id)
        await self.conn.execute(sa.delete(pseudonyms_table).where(pseudonyms_table.c.subject_id == subject_id))
        self._keys.forget(subject_id)
        self._key_rows[subject_id] = None

    async def _save_subject_in_one_statement(self, state: SubjectConsents, expected_version: int,
                                             new_events: list[Event], actor: str,
                                             pseudonyms: dict[str, str] | None = None, seal: Sealer | None = None,
                                             new_key: dict[str, Any] | None = None) -> list[RecordedEvent]:
        """PostgreSQL: the append, both projections, any pseudonym mapping and any new data key as one
        statement (consent/adapters/write_batcher.py), with other writes' when not in a transaction."""
        now = datetime.now(UTC)
        stream_id = subject_stream(state.subject_id)
        rows = event_rows(await self._previous_hash(stream_id, expected_version), stream_id, expected_version,
                          new_events, actor, now, pseudonyms, seal)
        touched = sorted({(e.purpose, e.partner) for e in new_events if isinstance(e, SubjectChange)},
                         key=lambda k: (k[0], k[1] or ""))
        metadata = _json(rows[0]["metadata"])
        append = SubjectAppend(
            subject_id=state.subject_id, stream_id=stream_id, version=state.version,
            global_opt_out=state.global_opt_out,
            events=[(row["event_id"], row["stream_version"], row["type"], _json(row["data"]), metadata, now,
                     row["hash"]) for row in rows],
            consents=[(r.purpose, r.partner or "", _json(list(r.scopes)) if r.scopes is not None else None,
                       r.status, r.expires_at, r.purpose_version, r.updated_at)
                      for key in touched if (r := state.records.get(key)) is not None],
            pseudonyms=list((pseudonyms or {}).items()),
            new_key=None if new_key is None else (new_key["key_id"], new_key["wrapped_key"],
                                                  new_key["master_key_id"], now))
        try:
            if self._autocommit and self._batcher is not None:
                positions = await self._batcher.append(append)
            else:
                await self._connect_for_autocommit()
                found = await self.conn.execute(SUBJECT_APPEND, subject_append_params([append]))
                positions = positions_by_stream(found.all())[stream_id]
        except IntegrityError as error:
            if "stream_version" in str(error.orig):
                raise VersionConflict(stream_id, expected_version) from None
            raise
        state.position = positions[-1]
        self._stream_heads[stream_id] = (rows[-1]["stream_version"], rows[-1]["hash"])
        return [RecordedEvent(event_id=row["event_id"], stream_id=stream_id, stream_version=row["stream_version"],
                              position=position, event=event, recorded_at=now,
                              pseudonym=published_pseudonym(event, row["metadata"]))
                for row, position, event in zip(rows, positions, new_events, strict=True)]

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
