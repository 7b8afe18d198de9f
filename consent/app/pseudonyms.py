"""Issuing pairwise pseudonyms: a subject (or an admin) learns the id a partner knows the subject by."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from msgspec import Struct

from consent.app.read_model import SubjectCache
from consent.domain.catalog import Catalog
from consent.domain.ids import check_slug, check_subject
from consent.domain.pseudonyms import key_missing, pseudonym


class PseudonymView(Struct):
    subject_id: str
    partner_id: str
    pseudonym: str


class PseudonymStore(Protocol):
    async def record(self, partner_id: str, pseudonym: str, subject_id: str) -> None:
        """Remember which subject the pseudonym stands for (idempotent)."""
        ...


class PseudonymService:
    def __init__(self, key: bytes | None, store: PseudonymStore, catalog: Callable[[], Catalog],
                 subjects: SubjectCache) -> None:
        self._key = key
        self._store = store
        self._catalog = catalog
        self._subjects = subjects

    async def issue(self, subject_id: str, partner_id: str) -> PseudonymView:
        """Any existing partner, pairwise or not yet: an admin moving a partner to pairwise hands it
        its pseudonyms for the subjects it already knows."""
        check_subject(subject_id)
        check_slug(partner_id, "partner")
        self._catalog().partner(partner_id)  # NotFound for an unknown partner
        if self._key is None:
            raise key_missing()
        issued = pseudonym(self._key, partner_id, subject_id)
        # Recorded (again: erasure deletes mappings, and another process may have erased) before it is
        # handed out, so that the partner may ask about it at once.
        await self._store.record(partner_id, issued, subject_id)
        self._subjects.remember_pseudonym(partner_id, issued, subject_id)
        return PseudonymView(subject_id=subject_id, partner_id=partner_id, pseudonym=issued)
