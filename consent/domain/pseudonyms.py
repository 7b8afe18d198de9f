"""Pairwise pseudonyms: a partner set to `identifiers: pairwise` knows each subject by an id of its own.

pseudonym = "pw_" + base64url(HMAC-SHA256(key, partner_id || 0x00 || subject_id)), unpadded: 46
characters, well within the 128 of a subject id. The same key, partner and subject always give
the same pseudonym; two partners' pseudonyms for one subject share nothing that links them
without the key. HMAC cannot be inverted, so whoever issues a pseudonym also records which
subject it stands for (see the `pseudonyms` table).
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from consent.domain.catalog import Catalog
from consent.domain.errors import DomainError
from consent.domain.events import Event, SubjectChange

PREFIX = "pw_"
# A short key could be searched for from a few known (subject, pseudonym) pairs.
MIN_KEY_LENGTH = 32


def pseudonym(key: bytes, partner_id: str, subject_id: str) -> str:
    """The subject's stable id as this partner sees it. The NUL separator occurs in neither id."""
    digest = hmac.new(key, partner_id.encode() + b"\x00" + subject_id.encode(), hashlib.sha256).digest()
    return PREFIX + base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def key_missing() -> DomainError:
    return DomainError("pseudonym_key_missing",
                       "pairwise identifiers need CONSENT_PSEUDONYM_KEY, which this server does not have")


def pseudonyms_for_events(key: bytes | None, catalog: Catalog, subject_id: str,
                          events: list[Event]) -> dict[str, str]:
    """{partner: pseudonym} for every pairwise partner these subject events concern.

    Events naming such a partner must never leave with the subject id: without the key,
    refuse the write rather than publish it.
    """
    found: dict[str, str] = {}
    for event in events:
        partner_id = event.partner if isinstance(event, SubjectChange) else None
        if partner_id is None or partner_id in found:
            continue
        partner = catalog.partners.get(partner_id)
        if partner is None or partner.identifiers != "pairwise":
            continue
        if key is None:
            raise key_missing()
        found[partner_id] = pseudonym(key, partner_id, subject_id)
    return found
