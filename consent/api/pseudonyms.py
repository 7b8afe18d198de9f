"""GET /v1/subjects/{subject_id}/pseudonyms/{partner_id}: the id a pairwise partner knows the subject by.

The subject (or an admin) may learn it, to hand it to that partner; the partner itself may not:
it would learn the subject id it is kept from.
"""

from __future__ import annotations

from litestar import get
from litestar.di import NamedDependency
from litestar.params import FromPath

from consent.api.errors import ERRORS
from consent.api.guards import own_subject
from consent.app.pseudonyms import PseudonymService, PseudonymView

Pseudonyms = NamedDependency[PseudonymService]


@get("/v1/subjects/{subject_id:str}/pseudonyms/{partner_id:str}", tags=["consents"], responses=ERRORS,
     guards=[own_subject],
     summary="The subject's pairwise pseudonym for a partner (the subject, or admin)")
async def subject_pseudonym(subject_id: FromPath[str], partner_id: FromPath[str],
                            pseudonyms: Pseudonyms) -> PseudonymView:
    return await pseudonyms.issue(subject_id, partner_id)
