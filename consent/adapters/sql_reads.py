"""Reads of the projections outside a unit of work: the catalog at start, subjects for decisions, the head."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from consent.adapters.database import Database
from consent.adapters.sql_rows import CATALOG_TABLES, subjects_from_rows
from consent.adapters.tables import consents, events, subjects
from consent.domain.catalog import Catalog
from consent.domain.streams import stream_of
from consent.domain.subject import SubjectConsents

SUBJECT_STATE = (
    sa.select(subjects.c.subject_id, subjects.c.version, subjects.c.position, subjects.c.global_opt_out,
              consents.c.purpose_id, consents.c.partner_id, consents.c.scopes, consents.c.status,
              consents.c.expires_at, consents.c.purpose_version, consents.c.updated_at)
    .select_from(subjects.outerjoin(consents, consents.c.subject_id == subjects.c.subject_id))
)
_SUBJECTS_BY_ANY = SUBJECT_STATE.where(
    subjects.c.subject_id == sa.any_(sa.bindparam("ids", type_=postgresql.ARRAY(sa.String))))


async def load_subjects(conn: AsyncConnection, subject_ids: list[str]) -> dict[str, SubjectConsents]:
    """Many subjects' states in one indexed read."""
    if conn.dialect.name == "postgresql":
        # One statement for any number of ids (IN would compile anew for every count).
        rows = (await conn.execute(_SUBJECTS_BY_ANY, {"ids": subject_ids})).all()
    else:
        rows = (await conn.execute(SUBJECT_STATE.where(subjects.c.subject_id.in_(subject_ids)))).all()
    return subjects_from_rows(rows, subject_ids)


async def load_catalog(conn: AsyncConnection) -> tuple[Catalog, dict[str, int]]:
    """The catalog, and the stream version each of its entities was read at."""
    catalog = Catalog()
    versions: dict[str, int] = {}
    for kind, (table, from_row) in CATALOG_TABLES.items():
        held = getattr(catalog, f"{kind}s")
        for row in (await conn.execute(sa.select(table))).mappings():
            held[row["id"]] = from_row(row)
            versions[stream_of(kind, row["id"])] = row["stream_version"]
    return catalog, versions


async def head_position(conn: AsyncConnection) -> int:
    return (await conn.execute(sa.select(sa.func.coalesce(sa.func.max(events.c.position), 0)))).scalar_one()


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
