"""PostgreSQL's recorder: a subject write is one statement, sent with other writes' when it can be.

The append, both projections, any pseudonym mapping and any new data key go as data-modifying CTEs over
arrays (`SUBJECT_WRITE`): atomic without a transaction, which spares the BEGIN and COMMIT round trips on
the write hot path, and batchable (consent/adapters/write_batcher.py groups concurrent writes into one
statement). An erasure deletes as well, and takes the shared several-statement path in a transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.exc import IntegrityError

from consent.adapters.sql_recorder import SqlRecorder, audited_predicate, version_conflict_from
from consent.adapters.write_record import SubjectWrite

if TYPE_CHECKING:
    from consent.adapters.write_batcher import WriteBatcher

_encode_json = msgspec.json.Encoder().encode

SUBJECT_WRITE = sa.text("""
    WITH appended AS (
        INSERT INTO events (event_id, stream_id, stream_version, type, data, metadata, recorded_at, hash)
        SELECT e.event_id, e.stream_id, e.stream_version, e.type, CAST(e.data AS jsonb),
               CAST(e.metadata AS jsonb), e.recorded_at, e.hash
        FROM unnest(CAST(:e_id AS uuid[]), CAST(:e_stream AS varchar[]), CAST(:e_version AS integer[]),
                    CAST(:e_type AS varchar[]), CAST(:e_data AS text[]), CAST(:e_metadata AS text[]),
                    CAST(:e_at AS timestamptz[]), CAST(:e_hash AS bytea[]))
             WITH ORDINALITY AS e(event_id, stream_id, stream_version, type, data, metadata, recorded_at, hash, n)
        ORDER BY e.n
        RETURNING position, stream_id, stream_version),
    subject AS (
        INSERT INTO subjects (subject_id, version, position, global_opt_out)
        SELECT s.subject_id, s.version, a.position, s.opt_out
        FROM unnest(CAST(:s_id AS varchar[]), CAST(:s_stream AS varchar[]), CAST(:s_version AS integer[]),
                    CAST(:s_opt_out AS boolean[])) AS s(subject_id, stream_id, version, opt_out)
        JOIN appended a ON a.stream_id = s.stream_id AND a.stream_version = s.version
        ON CONFLICT (subject_id) DO UPDATE SET version = EXCLUDED.version, position = EXCLUDED.position,
            global_opt_out = EXCLUDED.global_opt_out),
    consent AS (
        INSERT INTO consents (subject_id, purpose_id, partner_id, scopes, status, expires_at, purpose_version,
                              updated_at)
        SELECT c.subject_id, c.purpose_id, c.partner_id, CAST(c.scopes AS jsonb), c.status, c.expires_at,
               c.purpose_version, c.updated_at
        FROM unnest(CAST(:c_subject AS varchar[]), CAST(:c_purpose AS varchar[]), CAST(:c_partner AS varchar[]),
                    CAST(:c_scopes AS text[]), CAST(:c_status AS varchar[]), CAST(:c_expires AS timestamptz[]),
                    CAST(:c_purpose_version AS integer[]), CAST(:c_updated AS timestamptz[]))
             AS c(subject_id, purpose_id, partner_id, scopes, status, expires_at, purpose_version, updated_at)
        ON CONFLICT (subject_id, purpose_id, partner_id) DO UPDATE SET scopes = EXCLUDED.scopes,
            status = EXCLUDED.status, expires_at = EXCLUDED.expires_at,
            purpose_version = EXCLUDED.purpose_version, updated_at = EXCLUDED.updated_at),
    pseudonym AS (
        INSERT INTO pseudonyms (partner_id, pseudonym, subject_id)
        SELECT * FROM unnest(CAST(:p_partner AS varchar[]), CAST(:p_pseudonym AS varchar[]),
                             CAST(:p_subject AS varchar[]))
        ON CONFLICT (partner_id, pseudonym) DO NOTHING),
    -- A subject's first personal data: its data key, with the events. A key row is only ever made or
    -- deleted together with an append to the subject's stream, so a key committed by someone else
    -- since the state was read means an event at this version too: the append then fails whole.
    subject_key AS (
        INSERT INTO subject_keys (subject_id, key_id, wrapped_key, master_key_id, created_at)
        SELECT * FROM unnest(CAST(:k_subject AS varchar[]), CAST(:k_id AS varchar[]), CAST(:k_wrapped AS bytea[]),
                             CAST(:k_master AS varchar[]), CAST(:k_at AS timestamptz[]))
        ON CONFLICT (subject_id) DO NOTHING)
    SELECT position, stream_id, stream_version FROM appended""")

_compiled = SUBJECT_WRITE.compile(dialect=asyncpg_dialect())
# The statement as asyncpg takes it: $n placeholders, and the parameter names in their order.
ASYNCPG_SQL, ASYNCPG_NAMES = _compiled.string, tuple(_compiled.positiontup or ())


def _json(value: Any) -> str | None:
    return None if value is None else _encode_json(value).decode()


def subject_write_params(writes: Iterable[SubjectWrite]) -> dict[str, list[Any]]:
    """The statement's arrays for these writes (one row per event, subject, consent, pseudonym, key)."""
    params: dict[str, list[Any]] = {name: [] for name in ASYNCPG_NAMES}
    for w in writes:
        stream_id = w.stream_id
        for row in w.events:
            for name, value in (("e_id", row["event_id"]), ("e_stream", stream_id),
                                ("e_version", row["stream_version"]), ("e_type", row["type"]),
                                ("e_data", _json(row["data"])), ("e_metadata", _json(row["metadata"])),
                                ("e_at", row["recorded_at"]), ("e_hash", row["hash"])):
                params[name].append(value)
        for name, value in (("s_id", w.subject_id), ("s_stream", stream_id), ("s_version", w.version),
                            ("s_opt_out", w.global_opt_out)):
            params[name].append(value)
        for r in w.consents:
            for name, value in (("c_subject", w.subject_id), ("c_purpose", r.purpose), ("c_partner", r.partner or ""),
                                ("c_scopes", _json(list(r.scopes)) if r.scopes is not None else None),
                                ("c_status", r.status), ("c_expires", r.expires_at),
                                ("c_purpose_version", r.purpose_version), ("c_updated", r.updated_at)):
                params[name].append(value)
        for partner_id, pseudonym in w.pseudonyms.items():
            params["p_partner"].append(partner_id)
            params["p_pseudonym"].append(pseudonym)
            params["p_subject"].append(w.subject_id)
        if w.new_key is not None:
            for name, value in (("k_subject", w.subject_id), ("k_id", w.new_key.key_id),
                                ("k_wrapped", w.new_key.wrapped_key), ("k_master", w.new_key.master_key_id),
                                ("k_at", w.at)):
                params[name].append(value)
    return params


def positions_by_stream(rows: Iterable[tuple[int, str, int]]) -> dict[str, list[int]]:
    """The appended events' positions, per stream, in stream order."""
    found: dict[str, list[tuple[int, int]]] = {}
    for position, stream_id, stream_version in rows:
        found.setdefault(stream_id, []).append((stream_version, position))
    return {stream_id: [position for _, position in sorted(pairs)] for stream_id, pairs in found.items()}


class PostgresRecorder(SqlRecorder):
    AUDITED = audited_predicate("(metadata ->> 'actor')")
    # Group commit of single writes (set by the unit of work when it is not in a transaction).
    batcher: WriteBatcher | None = None

    async def write_subject(self, write: SubjectWrite) -> list[int]:
        if write.erased:
            return await super().write_subject(write)
        try:
            if self.batcher is not None:
                return await self.batcher.append(write)
            conn = await self._unit.connection()
            found = await conn.execute(SUBJECT_WRITE, subject_write_params([write]))
            return positions_by_stream(found.all())[write.stream_id]
        except IntegrityError as error:
            raise version_conflict_from(error, write.stream_id, write.expected_version) from None
