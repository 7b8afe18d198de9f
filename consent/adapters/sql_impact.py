"""How many subjects a catalog change affects, counted in the read models (consent/app/catalog_plan.py)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from consent.adapters.database import Database
from consent.adapters.tables import consents
from consent.app.catalog_plan import Impact
from consent.domain.ids import covers

_ACTIVE = sa.and_(consents.c.status == "granted",
                  sa.or_(consents.c.expires_at.is_(None), consents.c.expires_at > sa.bindparam("now")))


class SqlImpact:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def reconsent(self, purpose_id: str, below_version: int, now: datetime) -> Impact:
        """Subjects with an active grant of the purpose given to a version below `below_version`: each
        would be asked again (`reconsent_required`)."""
        stale = sa.and_(consents.c.purpose_id == purpose_id, consents.c.purpose_version < below_version, _ACTIVE)
        async with self._database.reading() as conn:
            total = (await conn.execute(sa.select(sa.func.count(sa.distinct(consents.c.subject_id))).where(stale),
                                        {"now": now})).scalar_one()
            rows = await conn.execute(
                sa.select(consents.c.partner_id, sa.func.count()).where(stale, consents.c.partner_id != "")
                .group_by(consents.c.partner_id), {"now": now})
            return Impact(subjects=total, by_partner={partner: n for partner, n in rows})

    async def narrowed(self, partner_id: str, kept: dict[str, tuple[str, ...]], now: datetime) -> Impact:
        """Subjects with an active grant to the partner that names a scope its data uses no longer cover."""
        if not kept:
            return Impact(subjects=0, by_partner={})
        affected: set[str] = set()
        async with self._database.reading() as conn:
            for purpose_id, scopes in kept.items():
                rows = await conn.execute(
                    sa.select(consents.c.subject_id, consents.c.scopes).where(
                        consents.c.purpose_id == purpose_id, consents.c.partner_id == partner_id, _ACTIVE),
                    {"now": now})
                affected.update(subject_id for subject_id, granted in rows
                                if granted is None or any(not any(covers(k, s) for k in scopes) for s in granted))
        return Impact(subjects=len(affected), by_partner={partner_id: len(affected)} if affected else {})
