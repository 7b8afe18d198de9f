"""Consent receipts, the keys that verify them, and the subject's export."""

from __future__ import annotations

from uuid import UUID

from litestar import Controller, get
from litestar.datastructures import CacheControlHeader
from litestar.di import NamedDependency
from litestar.params import FromPath

from consent.adapters.receipt_keys import Jwks, ReceiptKeys
from consent.api.deps import Audits, Caller
from consent.api.errors import ERRORS
from consent.api.guards import own_subject
from consent.app.subject_records import SubjectRecords
from consent.app.views import ReceiptView, SubjectExportView
from consent.domain.ids import check_subject

Records = NamedDependency[SubjectRecords]


# Public keys are no personal data: caches may keep them, briefly, so that a rotation shows soon.
@get("/.well-known/jwks.json", tags=["receipts"], security=[],
     cache_control=CacheControlHeader(max_age=300, public=True),
     summary="Public keys that verify consent receipts (no credentials needed)")
async def jwks(receipt_keys: NamedDependency[ReceiptKeys]) -> Jwks:
    return receipt_keys.jwks


class ReceiptController(Controller):
    path = "/v1/subjects/{subject_id:str}"
    tags = ["receipts"]
    guards = [own_subject]

    @get("/receipts/{event_id:uuid}", responses=ERRORS,
         summary="The signed receipt of one of the subject's consent events (the subject, or admin)")
    async def receipt(self, subject_id: FromPath[str], event_id: FromPath[UUID], principal: Caller,
                      records: Records, audits: Audits) -> ReceiptView:
        check_subject(subject_id)
        if principal.kind == "admin":  # a receipt is part of the history: an admin's read is audited
            await audits.record_history_read(subject_id, principal.actor)
        return await records.receipt(subject_id, event_id)

    @get("/export", responses=ERRORS,
         summary="Everything held on the subject: consents, full history, receipts (the subject, or admin)")
    async def export(self, subject_id: FromPath[str], principal: Caller, records: Records,
                     audits: Audits) -> SubjectExportView:
        check_subject(subject_id)
        if principal.kind == "admin":
            # It holds the whole history: recorded like an administrator's read of the history.
            await audits.record_history_read(subject_id, principal.actor)
        return await records.export(subject_id)
