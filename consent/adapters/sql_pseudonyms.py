"""The pseudonym mapping on SQLAlchemy: which subject a pairwise partner's pseudonym stands for.

Appends record the mapping in their own statement (consent/adapters/postgres.py, sql_recorder.py); this module
records it when a pseudonym is issued, and reads it, for decisions, together with the subjects'
states: an uncached pseudonym costs one query, as an uncached subject id does.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from consent.adapters.database import Database
from consent.adapters.sql_rows import subjects_from_rows
from consent.adapters.tables import consents, pseudonyms, subjects
from consent.domain.subject import SubjectConsents

_STATE_BY_PSEUDONYM = (
    sa.select(pseudonyms.c.pseudonym, pseudonyms.c.subject_id, subjects.c.version, subjects.c.position,
              subjects.c.global_opt_out, consents.c.purpose_id, consents.c.partner_id, consents.c.scopes,
              consents.c.status, consents.c.expires_at, consents.c.purpose_version, consents.c.updated_at)
    .select_from(pseudonyms
                 .outerjoin(subjects, subjects.c.subject_id == pseudonyms.c.subject_id)
                 .outerjoin(consents, consents.c.subject_id == subjects.c.subject_id))
    .where(pseudonyms.c.partner_id == sa.bindparam("partner_id"))
)
# PostgreSQL: one statement for any number of pseudonyms (IN would compile anew for every count).
_BY_ANY = _STATE_BY_PSEUDONYM.where(
    pseudonyms.c.pseudonym == sa.any_(sa.bindparam("pseudonyms", type_=postgresql.ARRAY(sa.String))))
_BY_IN = _STATE_BY_PSEUDONYM.where(pseudonyms.c.pseudonym.in_(sa.bindparam("pseudonyms", expanding=True)))


def states_by_pseudonym(rows: list[Any]) -> dict[str, SubjectConsents]:
    """Fold (mapping, subject, consent) rows; a mapped subject without a state of its own is new."""
    subject_of = {row.pseudonym: row.subject_id for row in rows}
    states = subjects_from_rows([row for row in rows if row.version is not None],
                                list(dict.fromkeys(subject_of.values())))
    return {pseudonym: states[subject_id] for pseudonym, subject_id in subject_of.items()}


class SqlPseudonyms:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def load_pseudonymous(self, partner_id: str, wanted: list[str]) -> dict[str, SubjectConsents]:
        query = _BY_IN if self._database.is_sqlite else _BY_ANY
        async with self._database.reading() as conn:
            rows = (await conn.execute(query, {"partner_id": partner_id, "pseudonyms": wanted})).all()
        return states_by_pseudonym(rows)

    async def record(self, partner_id: str, pseudonym: str, subject_id: str) -> None:
        """Idempotent: the same key, partner and subject always give the same pseudonym."""
        insert = self._database.upsert(pseudonyms).values(
            partner_id=partner_id, pseudonym=pseudonym, subject_id=subject_id).on_conflict_do_nothing()
        async with self._database.writing() as conn:
            await conn.execute(insert)
