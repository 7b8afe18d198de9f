"""The one mapper between the domain and the projection tables' rows, both ways."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from consent.adapters.tables import partners, purposes, scopes
from consent.domain.catalog import Partner, Purpose, Scope
from consent.domain.subject import ConsentRecord, SubjectConsents


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


def subject_row(subject_id: str, version: int, position: int, global_opt_out: bool) -> dict[str, Any]:
    return {"subject_id": subject_id, "version": version, "position": position, "global_opt_out": global_opt_out}


def consent_row(subject_id: str, r: ConsentRecord) -> dict[str, Any]:
    return {"subject_id": subject_id, "purpose_id": r.purpose, "partner_id": r.partner or "",
            "scopes": list(r.scopes) if r.scopes is not None else None, "status": r.status,
            "expires_at": r.expires_at, "purpose_version": r.purpose_version, "updated_at": r.updated_at}


def purpose_from_row(row: Any) -> Purpose:
    return Purpose(id=row["id"], title=row["title"], description=row["description"],
                   legal_basis=row["legal_basis"], retention=row["retention"],
                   sale_or_sharing=row["sale_or_sharing"], version=row["version"],
                   reconsent_below=row["reconsent_below"], status=row["status"])


def scope_from_row(row: Any) -> Scope:
    return Scope(id=row["id"], title=row["title"], description=row["description"], sensitivity=row["sensitivity"])


def partner_from_row(row: Any) -> Partner:
    return Partner(id=row["id"], name=row["name"], status=row["status"],
                   data_uses={k: tuple(v) for k, v in row["data_uses"].items()},
                   contract_ends_at=row["contract_ends_at"], base_status=row["base_status"],
                   identifiers=row["identifiers"], rate_limit=row["rate_limit"])


# Each catalog kind's table and row mapper, by stream kind (consent/domain/streams.py).
CATALOG_TABLES = {"purpose": (purposes, purpose_from_row), "scope": (scopes, scope_from_row),
                  "partner": (partners, partner_from_row)}


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
