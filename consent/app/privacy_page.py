"""What the privacy center shows a subject, and the consent changes a submitted page asks for.

Pure: the catalog, the subject's state and the time in; the page's blocks out, and back from the form
the list of `Change`s that the same use case as the API records (consent/app/subject_service.py).
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal, NamedTuple

from consent.domain.catalog import Catalog, Purpose
from consent.domain.events import Evidence
from consent.domain.subject import Change, SubjectConsents

FIRST_PARTY = "_"  # the `data-partner` of a first-party control
State = Literal["granted", "withdrawn", "expired", "objected", "reconsent", "none"]
Control = Literal["consent", "objection", "information"]


class ScopeShown(NamedTuple):
    title: str
    sensitivity: str


class Switch(NamedTuple):
    purpose: str
    partner: str  # FIRST_PARTY, or the partner id
    partner_name: str | None
    scopes: list[ScopeShown]  # what a partner may use, in words; empty for first-party
    state: State
    expires_at: datetime | None
    checked: bool  # consent: granted (and current); objection: objected

    @property
    def key(self) -> str:
        return f"{self.purpose}:{self.partner}"


class PurposeBlock(NamedTuple):
    purpose: Purpose
    control: Control  # consent: switches; objection: one objection control; information: none
    switches: list[Switch]


def page_blocks(catalog: Catalog, state: SubjectConsents, now: datetime) -> list[PurposeBlock]:
    """Every active purpose, in title order, with the controls its legal basis allows."""
    blocks = []
    for purpose in sorted((p for p in catalog.purposes.values() if p.status == "active"), key=lambda p: p.title):
        if purpose.legal_basis == "consent":
            switches = [_switch(catalog, state, purpose, None, now)]
            switches += [_switch(catalog, state, purpose, partner.id, now)
                         for partner in sorted(catalog.partners.values(), key=lambda p: p.name)
                         if partner.approved_scopes(purpose.id) and partner.status in ("sandbox", "active")]
            blocks.append(PurposeBlock(purpose, "consent", switches))
        elif purpose.legal_basis == "legitimate_interest":
            blocks.append(PurposeBlock(purpose, "objection", [_switch(catalog, state, purpose, None, now)]))
        else:
            blocks.append(PurposeBlock(purpose, "information", []))
    return blocks


def _switch(catalog: Catalog, state: SubjectConsents, purpose: Purpose, partner_id: str | None,
            now: datetime) -> Switch:
    record = state.records.get((purpose.id, partner_id))
    current: State = "none" if record is None else record.status_at(now)
    if current == "granted" and purpose.legal_basis == "consent" and record.purpose_version < purpose.reconsent_below:
        current = "reconsent"
    partner = catalog.partners.get(partner_id) if partner_id is not None else None
    scopes = []
    if partner is not None:
        for scope_id in partner.approved_scopes(purpose.id):
            scope = catalog.scopes.get(scope_id)
            scopes.append(ScopeShown(scope.title if scope else scope_id, scope.sensitivity if scope else "low"))
    checked = current == ("objected" if purpose.legal_basis == "legitimate_interest" else "granted")
    return Switch(purpose.id, partner_id or FIRST_PARTY, partner.name if partner else None, scopes, current,
                  record.expires_at if record is not None and current == "granted" else None, checked)


def changes_from_form(blocks: list[PurposeBlock], shown: set[str], checked: set[str]) -> list[Change]:
    """What the subject changed: only controls that were on the page they submitted, compared with now."""
    changes = []
    for block in blocks:
        for switch in block.switches:
            if switch.key not in shown:
                continue
            partner = None if switch.partner == FIRST_PARTY else switch.partner
            wanted = switch.key in checked
            if block.control == "objection":
                if wanted and switch.state != "objected":
                    changes.append(Change(purpose=switch.purpose, action="object"))
                elif not wanted and switch.state == "objected":
                    changes.append(Change(purpose=switch.purpose, action="grant"))  # the objection is lifted
            elif wanted and switch.state != "granted":
                changes.append(Change(purpose=switch.purpose, action="grant", partner=partner))
            elif not wanted and switch.state in ("granted", "reconsent"):
                changes.append(Change(purpose=switch.purpose, action="withdraw", partner=partner))
    return changes


def evidence_for(catalog: Catalog, changes: list[Change]) -> Evidence:
    """Where the choice was made and the text the subject saw for each purpose it changed."""
    purposes = sorted({c.purpose for c in changes})
    shown = "\n".join(f"{catalog.purposes[p].title} (version {catalog.purposes[p].version}): "
                      f"{catalog.purposes[p].description}" for p in purposes)
    return Evidence(collection_point="privacy-center", text_shown=shown)
