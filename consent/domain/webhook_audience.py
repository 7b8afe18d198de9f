"""Which partners hear an event through their webhooks (docs/webhooks.md, "What is delivered"): a pure
function of the event and the catalog, so that the dispatcher and a replay route alike.

- a subject event naming a partner reaches that partner;
- a first-party subject event (partner null) reaches every partner whose data uses hold its purpose: it
  changes what they may do; a global opt-out reaches those with a purpose of sale or sharing;
- an erasure reaches every partner the subject had granted, itself or first-party for one of its purposes;
- catalog notices: a purpose in a partner's data uses revised or retired; the partner's own update,
  suspension, reinstatement, termination, and the notice of its contract's end.
"""

from __future__ import annotations

from collections.abc import Iterable

from consent.domain.catalog import Catalog
from consent.domain.events import (
    Event,
    GlobalOptOutRecorded,
    PartnerContractEnding,
    PartnerReinstated,
    PartnerSuspended,
    PartnerTerminated,
    PartnerUpdated,
    PurposeRetired,
    PurposeRevised,
    SubjectChange,
    SubjectErased,
    event_type,
)

# The event types a webhook may ask for; every other type reaches no webhook.
DELIVERED_TYPES = ("subject.granted", "subject.withdrawn", "subject.expired", "subject.objected",
                   "subject.global_opt_out", "subject.erased", "purpose.revised", "purpose.retired",
                   "partner.updated", "partner.suspended", "partner.reinstated", "partner.terminated",
                   "partner.contract_ending")
_PARTNER_NOTICES = (PartnerUpdated, PartnerSuspended, PartnerReinstated, PartnerTerminated, PartnerContractEnding)


def audience(event: Event, catalog: Catalog, granted_before: Iterable[tuple[str | None, str]] = ()) -> set[str]:
    """The partners `event` reaches. `granted_before`: for an erasure, the (partner or None, purpose) of every
    grant the subject gave before it (the read models no longer hold them)."""
    partners = catalog.partners
    if isinstance(event, SubjectChange):
        if event.partner is not None:
            return {event.partner} if event.partner in partners else set()
        return _using(catalog, event.purpose)
    if isinstance(event, GlobalOptOutRecorded):
        return {p.id for p in partners.values()
                if any(catalog.purposes.get(purpose) is not None and catalog.purposes[purpose].sale_or_sharing
                       for purpose in p.data_uses)}
    if isinstance(event, SubjectErased):
        reached: set[str] = set()
        for partner, purpose in granted_before:
            if partner is None:
                reached |= _using(catalog, purpose)
            elif partner in partners:
                reached.add(partner)
        return reached
    if isinstance(event, PurposeRevised | PurposeRetired):
        return _using(catalog, event.purpose_id)
    if isinstance(event, _PARTNER_NOTICES):
        return {event.partner_id} if event.partner_id in partners else set()
    return set()


def _using(catalog: Catalog, purpose_id: str) -> set[str]:
    return {p.id for p in catalog.partners.values() if purpose_id in p.data_uses}


def wants(events: Iterable[str] | None, event: Event) -> bool:
    """A webhook's filter: None takes every type that reaches it."""
    return events is None or event_type(event) in events
