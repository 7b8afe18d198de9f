"""The decision function: a pure function of catalog, consent state and an injected clock.

Every reason of docs/design.md, "Decision rules", is reached, the order between them holds when
several apply, and `retain_until` is the earliest of its three limits.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from msgspec import structs

from consent.domain.catalog import (
    Catalog,
    PartnerSpec,
    PurposeSpec,
    ScopeSpec,
    define_purpose,
    define_scope,
    register_partner,
    retire_purpose,
    suspend_partner,
    terminate_partner,
)
from consent.domain.decision import REASONS, Decision, Denied, decide
from consent.domain.durations import parse_duration
from consent.domain.events import (
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    GlobalOptOutRecorded,
    ObjectionRecorded,
)
from consent.domain.subject import Change, SubjectConsents, change_consents

# 31 January, so that P1M (to 29 February 2024) and P30D (to 1 March) differ.
NOW = datetime(2024, 1, 31, 12, tzinfo=UTC)
US = timedelta(microseconds=1)
DAY = timedelta(days=1)

PURPOSES = {
    "marketing": PurposeSpec("Marketing", "Offers", "consent", "P90D"),
    "ads": PurposeSpec("Ads", "Sold to ad networks", "consent", "P30D", sale_or_sharing=True),
    "monthly": PurposeSpec("Monthly", "Monthly digest", "consent", "P1M"),
    "analytics": PurposeSpec("Analytics", "Usage", "legitimate_interest", "P1Y"),
    "profiling": PurposeSpec("Profiling", "Shared audiences", "legitimate_interest", "P1Y", sale_or_sharing=True),
    "billing": PurposeSpec("Billing", "Invoices", "contract", "P10Y"),
    "tax": PurposeSpec("Tax", "Tax records", "legal_obligation", "P10Y"),
    "old": PurposeSpec("Old", "A retired purpose", "consent", "P90D"),
}
SCOPES = ("profile", "profile.email", "orders", "orders.history", "location", "payment")
USES = {
    "marketing": ("profile", "orders", "location"),
    "ads": ("profile", "orders"),
    "monthly": ("orders",),
    "analytics": ("profile", "orders"),
    "profiling": ("orders",),
    "billing": ("orders",),
    "tax": ("orders",),
    "old": ("profile", "orders"),
}
CONTRACT_END = NOW + 10 * DAY
PARTNERS = {
    # partner id: (status, data uses, contract end)
    "acme": ("active", USES, None),
    "beta": ("sandbox", USES, None),
    "sleepy": ("active", USES, None),  # suspended below
    "gone": ("active", USES, None),  # terminated below
    "ending": ("active", USES, CONTRACT_END),
    "longterm": ("active", USES, NOW + 1000 * DAY),
    "ended": ("active", USES, NOW - timedelta(seconds=1)),
    "ends-now": ("active", USES, NOW),
    "narrow": ("active", {"marketing": ("orders.history",)}, None),
}


def applied(catalog: Catalog, events: list) -> None:
    for event in events:
        catalog.apply(event)


def make_catalog() -> Catalog:
    """Built as the service builds it: by applying the events that the catalog commands return."""
    catalog = Catalog()
    for purpose_id, spec in PURPOSES.items():
        applied(catalog, define_purpose(None, purpose_id, spec, False, NOW - 100 * DAY))
    for scope_id in SCOPES:
        applied(catalog, define_scope(None, scope_id, ScopeSpec(scope_id, "", "low"), NOW - 100 * DAY))
    for partner_id, (status, uses, ends) in PARTNERS.items():
        spec = PartnerSpec(name=partner_id.title(), status=status, data_uses=uses, contract_ends_at=ends)
        applied(catalog, register_partner(None, partner_id, spec, catalog, NOW - 100 * DAY))
    applied(catalog, suspend_partner(catalog.partners["sleepy"], NOW - 50 * DAY))
    applied(catalog, terminate_partner(catalog.partners["gone"], NOW - 50 * DAY))
    applied(catalog, retire_purpose(catalog.purposes["old"], NOW - 50 * DAY))
    return catalog


CATALOG = make_catalog()


def revise(catalog: Catalog, purpose_id: str, material: bool, at: datetime = NOW) -> int:
    """Change the purpose's text; returns the new version."""
    current = catalog.purposes[purpose_id]
    spec = structs.replace(PURPOSES[purpose_id], description=f"{current.description}, v{current.version + 1}")
    applied(catalog, define_purpose(current, purpose_id, spec, material, at))
    return catalog.purposes[purpose_id].version


# Subject state, built through change_consents where a command exists, raw events otherwise


def grant(purpose="marketing", partner=None, scopes=None, expires_at=None) -> Change:
    return Change(purpose=purpose, action="grant", partner=partner, scopes=scopes, expires_at=expires_at)


def withdraw(purpose="marketing", partner=None, scopes=None) -> Change:
    return Change(purpose=purpose, action="withdraw", partner=partner, scopes=scopes)


def obj(purpose="analytics", partner=None, scopes=None) -> Change:
    return Change(purpose=purpose, action="object", partner=partner, scopes=scopes)


OPT_OUT = GlobalOptOutRecorded(occurred_at=NOW - DAY, source="gpc")


def expired_event(purpose="marketing", partner=None, scopes=None, at=NOW - DAY) -> ConsentExpired:
    return ConsentExpired(occurred_at=at, purpose=purpose, partner=partner, scopes=scopes, purpose_version=1,
                          source="admin", expires_at=at)


def play(state: SubjectConsents, *steps, catalog: Catalog = CATALOG, at: datetime = NOW - DAY) -> SubjectConsents:
    for step in steps:
        events = change_consents(state, catalog, [step], "web", None, at) if isinstance(step, Change) else [step]
        assert events, f"{step} changed nothing: the test would not test what it says"
        for event in events:
            state.apply(event)
    return state


def subject(*steps, catalog: Catalog = CATALOG, at: datetime = NOW - DAY) -> SubjectConsents:
    return play(SubjectConsents("user-1"), *steps, catalog=catalog, at=at)


# Every consent-based purpose granted first-party for every scope: only catalog reasons can deny.
EVERYTHING = subject(*(grant(p) for p in ("marketing", "ads", "monthly")))
EVERYTHING.apply(ConsentGranted(occurred_at=NOW - 60 * DAY, purpose="old", partner=None, scopes=None,
                                purpose_version=1, source="web"))  # given before "old" was retired


def ask(state, partner, purpose, scopes, now=NOW, catalog=CATALOG) -> Decision:
    return decide(catalog, state, partner, purpose, list(scopes), now)


def denials(decision: Decision) -> list[tuple[str, str]]:
    return [(d.scope, d.reason) for d in decision.denied]


def only_reason(decision: Decision) -> str:
    """The one reason for which every requested scope was denied."""
    assert decision.decision == "deny" and decision.permitted == [] and decision.retain_until is None
    [reason] = {d.reason for d in decision.denied}
    return reason


def test_fixture_is_what_the_tests_assume():
    assert {p: CATALOG.partners[p].status for p in ("acme", "beta", "sleepy", "gone")} == {
        "acme": "active", "beta": "sandbox", "sleepy": "suspended", "gone": "terminated"}
    assert CATALOG.purposes["old"].status == "retired"
    assert {key: r.status for key, r in EVERYTHING.records.items()} == {
        ("marketing", None): "granted", ("ads", None): "granted", ("monthly", None): "granted",
        ("old", None): "granted"}
    assert set(REASONS) == {
        "unknown_partner", "partner_inactive", "unknown_purpose", "purpose_retired", "scope_not_approved",
        "no_consent", "consent_withdrawn", "consent_expired", "objected", "global_opt_out", "reconsent_required"}


# Partner and purpose: one reason for every scope


@pytest.mark.parametrize(
    ("partner", "purpose", "reason", "purpose_version"),
    [
        ("nobody", "marketing", "unknown_partner", 1),
        ("sleepy", "marketing", "partner_inactive", 1),  # suspended
        ("gone", "marketing", "partner_inactive", 1),  # terminated
        ("ended", "marketing", "partner_inactive", 1),  # contract ended a second ago
        ("ends-now", "marketing", "partner_inactive", 1),  # contract ends exactly now
        ("acme", "nope", "unknown_purpose", None),
        (None, "nope", "unknown_purpose", None),
        ("acme", "old", "purpose_retired", 1),
        (None, "old", "purpose_retired", 1),
        ("sleepy", "billing", "partner_inactive", 1),  # no consent needed, still no inactive partner
        ("gone", "analytics", "partner_inactive", 1),
    ],
)
def test_catalog_reasons_deny_every_scope(partner, purpose, reason, purpose_version):
    decision = ask(EVERYTHING, partner, purpose, ["orders", "profile"])
    assert decision == Decision(decision="deny", permitted=[], retain_until=None, purpose_version=purpose_version,
                                denied=[Denied("orders", reason), Denied("profile", reason)])


@pytest.mark.parametrize("partner", ["acme", "beta", "ending", "longterm", None])
@pytest.mark.parametrize("purpose", ["marketing", "ads", "analytics", "billing", "tax"])
def test_the_same_questions_permit_for_a_partner_in_good_standing(partner, purpose):
    """The control for the test above: what denies there is the partner or purpose, not the state."""
    decision = ask(EVERYTHING, partner, purpose, ["orders"])
    assert (decision.decision, decision.permitted, decision.denied) == ("permit", ["orders"], [])


def test_contract_end_boundary():
    partner = "ending"
    before = ask(EVERYTHING, partner, "marketing", ["orders"], now=CONTRACT_END - US)
    assert (before.decision, before.retain_until) == ("permit", CONTRACT_END)
    assert only_reason(ask(EVERYTHING, partner, "marketing", ["orders"], now=CONTRACT_END)) == "partner_inactive"


# Per-scope reasons


@pytest.mark.parametrize(
    ("steps", "partner", "purpose", "scope", "reason"),
    [
        ((), "acme", "ads", "location", "scope_not_approved"),  # approved for marketing, not ads
        ((grant(),), "acme", "marketing", "payment", "scope_not_approved"),  # granted, yet not approved
        ((grant(),), "narrow", "marketing", "orders", "scope_not_approved"),  # approved only orders.history
        ((), "acme", "marketing", "orders", "no_consent"),
        ((), None, "marketing", "orders", "no_consent"),
        ((grant("ads"),), "acme", "marketing", "orders", "no_consent"),  # granted for another purpose
        ((grant(partner="beta"),), "acme", "marketing", "orders", "no_consent"),  # for another partner
        ((grant(partner="acme"),), None, "marketing", "orders", "no_consent"),  # not first-party
        ((grant(scopes=("profile",)),), "acme", "marketing", "orders", "no_consent"),  # another scope
        ((grant(), withdraw()), "acme", "marketing", "orders", "consent_withdrawn"),
        ((grant(), withdraw()), None, "marketing", "orders", "consent_withdrawn"),
        ((grant(partner="acme"), withdraw(partner="acme")), "acme", "marketing", "orders", "consent_withdrawn"),
        ((grant(), expired_event()), "acme", "marketing", "orders", "consent_expired"),  # status expired
        ((grant(partner="acme"), expired_event(partner="acme")), "acme", "marketing", "orders",
         "consent_expired"),
        ((grant(expires_at=NOW),), "acme", "marketing", "orders", "consent_expired"),  # granted, expires now
        ((obj("marketing"),), "acme", "marketing", "orders", "objected"),  # consent basis
        ((grant(), obj("marketing")), None, "marketing", "orders", "objected"),
        ((obj(),), "acme", "analytics", "orders", "objected"),  # legitimate interest
        ((obj(partner="acme"),), "acme", "analytics", "orders", "objected"),
        ((grant("ads"), OPT_OUT), "acme", "ads", "orders", "global_opt_out"),
        ((grant("ads"), OPT_OUT), None, "ads", "orders", "global_opt_out"),
        ((OPT_OUT,), "acme", "profiling", "orders", "global_opt_out"),  # legitimate interest, sale
    ],
)
def test_each_scope_reason_is_reached(steps, partner, purpose, scope, reason):
    decision = ask(subject(*steps), partner, purpose, [scope])
    assert decision == Decision(decision="deny", permitted=[], denied=[Denied(scope, reason)], retain_until=None,
                                purpose_version=1)


@pytest.mark.parametrize(
    ("steps", "partner", "purpose"),
    [
        ((grant(), OPT_OUT), "acme", "marketing"),  # the opt-out touches sale_or_sharing purposes only
        ((OPT_OUT,), "acme", "analytics"),
        ((grant("ads"),), "acme", "ads"),  # without the opt-out the sale purpose permits
        ((), "acme", "profiling"),
        ((grant("ads"), OPT_OUT, grant(partner="acme")), "acme", "marketing"),
    ],
)
def test_global_opt_out_only_for_sale_or_sharing(steps, partner, purpose):
    assert ask(subject(*steps), partner, purpose, ["orders"]).permitted == ["orders"]


def test_state_none_is_a_subject_without_choices():
    assert only_reason(ask(None, "acme", "marketing", ["orders"])) == "no_consent"
    for purpose in ("analytics", "profiling", "billing", "tax"):
        assert ask(None, "acme", purpose, ["orders"]).decision == "permit"


# Reconsent


def test_material_revision_requires_reconsent_and_a_new_grant_lifts_it():
    catalog = make_catalog()
    state = subject(grant(), grant(partner="acme"), catalog=catalog)
    assert ask(state, "acme", "marketing", ["orders"], catalog=catalog).decision == "permit"

    assert revise(catalog, "marketing", material=False) == 2
    assert ask(state, "acme", "marketing", ["orders"], catalog=catalog).decision == "permit"
    assert ask(state, None, "marketing", ["orders"], catalog=catalog).purpose_version == 2

    assert revise(catalog, "marketing", material=True) == 3
    for partner in ("acme", "beta", None):  # the partner grant and the first-party grant alike
        decision = ask(state, partner, "marketing", ["orders", "profile"], catalog=catalog)
        assert denials(decision) == [("orders", "reconsent_required"), ("profile", "reconsent_required")]
        assert decision.purpose_version == 3

    # a later non-material revision does not make the old grants good again
    assert revise(catalog, "marketing", material=False) == 4
    assert only_reason(ask(state, "acme", "marketing", ["orders"], catalog=catalog)) == "reconsent_required"

    # granting again after the material revision permits; first-party only for the first-party record
    play(state, grant(), catalog=catalog, at=NOW)
    assert state.records[("marketing", None)].purpose_version == 4
    assert ask(state, None, "marketing", ["orders"], catalog=catalog).decision == "permit"
    assert ask(state, "beta", "marketing", ["orders"], catalog=catalog).decision == "permit"
    assert only_reason(ask(state, "acme", "marketing", ["orders"], catalog=catalog)) == "reconsent_required"
    play(state, grant(partner="acme"), catalog=catalog, at=NOW)
    assert ask(state, "acme", "marketing", ["orders"], catalog=catalog).decision == "permit"


def test_grant_given_between_revisions_is_judged_against_the_last_material_one():
    catalog = make_catalog()
    revise(catalog, "marketing", material=True)  # v2, material
    state = subject(grant(), catalog=catalog)  # given at v2
    revise(catalog, "marketing", material=False)  # v3
    assert ask(state, None, "marketing", ["orders"], catalog=catalog).decision == "permit"
    revise(catalog, "marketing", material=True)  # v4
    assert only_reason(ask(state, None, "marketing", ["orders"], catalog=catalog)) == "reconsent_required"


def test_material_revision_does_not_touch_bases_without_grants():
    catalog = make_catalog()
    for purpose in ("analytics", "billing"):
        revise(catalog, purpose, material=True)
    state = subject(grant("analytics"), catalog=catalog, at=NOW - 60 * DAY)  # a grant where none is needed
    revise(catalog, "analytics", material=True)
    for purpose in ("analytics", "billing"):
        decision = ask(state, "acme", purpose, ["orders"], catalog=catalog)
        assert (decision.decision, decision.purpose_version) == ("permit", catalog.purposes[purpose].version)


# Order between reasons


@pytest.mark.parametrize(
    ("steps", "partner", "purpose", "scope", "revise_material", "reason"),
    [
        # catalog-level reasons, several at once
        ((), "nobody", "nope", "orders", None, "unknown_partner"),
        ((), "nobody", "old", "orders", None, "unknown_partner"),
        ((), "sleepy", "old", "orders", None, "partner_inactive"),
        ((), "gone", "nope", "orders", None, "partner_inactive"),
        ((), "ended", "old", "orders", None, "partner_inactive"),
        ((), "acme", "old", "location", None, "purpose_retired"),  # retired, not approved, no consent
        # a catalog reason before any subject reason
        ((grant("ads"), withdraw("ads"), OPT_OUT), "sleepy", "ads", "orders", None, "partner_inactive"),
        ((obj(), OPT_OUT), "gone", "profiling", "orders", None, "partner_inactive"),
        # not approved before anything about the subject
        ((), "acme", "marketing", "payment", None, "scope_not_approved"),
        ((grant("ads"), withdraw("ads"), OPT_OUT), "acme", "ads", "location", None, "scope_not_approved"),
        ((obj("profiling"),), "acme", "profiling", "profile", None, "scope_not_approved"),
        # no consent before the opt-out
        ((OPT_OUT,), "acme", "ads", "orders", "ads", "no_consent"),
        # withdrawn, expired before the opt-out and reconsent
        ((grant("ads"), withdraw("ads"), OPT_OUT), "acme", "ads", "orders", None, "consent_withdrawn"),
        ((grant("ads"), withdraw("ads"), OPT_OUT), "acme", "ads", "orders", "ads", "consent_withdrawn"),
        ((grant("ads"), expired_event("ads"), OPT_OUT), "acme", "ads", "orders", "ads", "consent_expired"),
        ((grant("ads", expires_at=NOW), OPT_OUT), "acme", "ads", "orders", "ads", "consent_expired"),
        # objected before the opt-out
        ((obj("ads"), OPT_OUT), "acme", "ads", "orders", None, "objected"),
        ((obj("ads"), OPT_OUT), "acme", "ads", "orders", "ads", "objected"),
        ((obj("profiling"), OPT_OUT), "acme", "profiling", "orders", None, "objected"),
        # the opt-out before reconsent
        ((grant("ads"), OPT_OUT), "acme", "ads", "orders", "ads", "global_opt_out"),
        ((grant("ads"), OPT_OUT), None, "ads", "orders", "ads", "global_opt_out"),
    ],
)
def test_earlier_reason_wins(steps, partner, purpose, scope, revise_material, reason):
    catalog = make_catalog()
    state = subject(*steps, catalog=catalog)
    if revise_material:
        revise(catalog, revise_material, material=True)
    assert only_reason(ask(state, partner, purpose, [scope], catalog=catalog)) == reason


def test_reasons_behind_the_winner_are_real():
    """Each later reason used above, alone, is what the function answers."""
    catalog = make_catalog()
    opted_out = subject(grant("ads"), OPT_OUT, catalog=catalog)
    plain = subject(grant("ads"), catalog=catalog)
    revise(catalog, "ads", material=True)
    assert only_reason(ask(plain, "acme", "ads", ["orders"], catalog=catalog)) == "reconsent_required"
    assert only_reason(ask(opted_out, "acme", "ads", ["orders"], catalog=catalog)) == "global_opt_out"
    assert only_reason(ask(EVERYTHING, "nobody", "marketing", ["orders"])) == "unknown_partner"
    assert only_reason(ask(EVERYTHING, "acme", "nope", ["orders"])) == "unknown_purpose"
    assert only_reason(ask(EVERYTHING, "acme", "old", ["orders"])) == "purpose_retired"


# Expiry


@pytest.mark.parametrize("partner", [None, "acme"])
def test_expiry_boundary(partner):
    expires = NOW + 5 * DAY
    state = subject(grant(partner=partner, expires_at=expires))
    before = ask(state, partner, "marketing", ["orders"], now=expires - US)
    assert (before.decision, before.permitted, before.retain_until) == ("permit", ["orders"], expires)
    at = ask(state, partner, "marketing", ["orders"], now=expires)
    assert denials(at) == [("orders", "consent_expired")]
    later = ask(state, partner, "marketing", ["orders"], now=expires + 365 * DAY)
    assert denials(later) == [("orders", "consent_expired")]


# retain_until


@pytest.mark.parametrize(
    ("steps", "partner", "purpose", "now", "retain_until"),
    [
        # now + purpose retention
        ((grant(),), "acme", "marketing", NOW, NOW + 90 * DAY),
        ((grant("ads"),), "acme", "ads", NOW, NOW + 30 * DAY),  # P30D: 1 March
        ((grant("monthly"),), "acme", "monthly", NOW, datetime(2024, 2, 29, 12, tzinfo=UTC)),  # P1M: calendar
        ((grant("monthly"),), None, "monthly", datetime(2024, 3, 31, 8, tzinfo=UTC),
         datetime(2024, 4, 30, 8, tzinfo=UTC)),
        ((), "acme", "analytics", NOW, datetime(2025, 1, 31, 12, tzinfo=UTC)),  # P1Y
        ((), None, "billing", NOW, datetime(2034, 1, 31, 12, tzinfo=UTC)),  # P10Y
        ((grant(expires_at=NOW + 200 * DAY),), "acme", "marketing", NOW, NOW + 90 * DAY),  # expiry later
        ((grant(),), "longterm", "marketing", NOW, NOW + 90 * DAY),  # contract later
        # grant expiry when earlier
        ((grant(expires_at=NOW + 5 * DAY),), "acme", "marketing", NOW, NOW + 5 * DAY),
        ((grant(partner="acme", expires_at=NOW + 3 * DAY),), "acme", "marketing", NOW, NOW + 3 * DAY),
        ((grant("monthly", expires_at=NOW + 28 * DAY),), None, "monthly", NOW, NOW + 28 * DAY),
        # partner contract end when earlier
        ((grant(),), "ending", "marketing", NOW, CONTRACT_END),
        ((), "ending", "billing", NOW, CONTRACT_END),
        ((), "longterm", "billing", NOW, NOW + 1000 * DAY),  # 1000 days: before the 10 years
        ((), "ending", "analytics", NOW, CONTRACT_END),
        ((grant(expires_at=NOW + 20 * DAY),), "ending", "marketing", NOW, CONTRACT_END),
        ((grant(partner="ending", expires_at=CONTRACT_END - US),), "ending", "marketing", NOW, CONTRACT_END - US),
        ((grant(expires_at=NOW + 5 * DAY),), "ending", "marketing", NOW, NOW + 5 * DAY),
        # the first-party question has no contract to end
        ((grant(),), None, "marketing", NOW, NOW + 90 * DAY),
    ],
)
def test_retain_until_is_the_earliest_limit(steps, partner, purpose, now, retain_until):
    decision = ask(subject(*steps), partner, purpose, ["orders"], now=now)
    assert decision.decision == "permit"
    assert decision.retain_until == retain_until


def test_retain_until_is_the_earliest_across_permitted_scopes():
    state = subject(grant(partner="acme", scopes=("orders",), expires_at=NOW + 7 * DAY),
                    grant(scopes=("profile",), expires_at=NOW + 3 * DAY),
                    grant(scopes=("location",), expires_at=NOW + DAY, purpose="ads"))
    assert ask(state, "acme", "marketing", ["orders"]).retain_until == NOW + 7 * DAY
    assert ask(state, "acme", "marketing", ["profile"]).retain_until == NOW + 3 * DAY
    assert ask(state, "acme", "marketing", ["orders", "profile"]).retain_until == NOW + 3 * DAY
    assert ask(state, "acme", "marketing", ["profile.email", "orders.history"]).retain_until == NOW + 3 * DAY
    # a denied scope's limit does not count, and neither does another purpose's grant
    partial = ask(state, "acme", "marketing", ["orders", "location"])
    assert (partial.decision, partial.retain_until) == ("partial", NOW + 7 * DAY)


def test_retain_until_ignores_an_expired_grants_date():
    state = subject(grant(scopes=("orders",), expires_at=NOW - US), grant(partner="acme", scopes=("profile",)),
                    at=NOW - DAY)
    decision = ask(state, "acme", "marketing", ["orders", "profile"])
    assert denials(decision) == [("orders", "consent_expired")]
    assert decision.retain_until == NOW + 90 * DAY


@pytest.mark.parametrize(
    ("state", "partner", "purpose"),
    [(subject(), "acme", "marketing"), (EVERYTHING, "sleepy", "marketing"), (subject(obj()), "acme", "analytics")],
)
def test_retain_until_is_null_when_nothing_is_permitted(state, partner, purpose):
    decision = ask(state, partner, purpose, ["orders", "profile"])
    assert (decision.decision, decision.permitted, decision.retain_until) == ("deny", [], None)


# Scope hierarchy


def test_grant_on_a_parent_scope_covers_its_children_only():
    state = subject(grant(scopes=("orders",)))
    decision = ask(state, None, "marketing", ["orders", "orders.history", "ordersx", "orders_x", "order"])
    assert decision.permitted == ["orders", "orders.history"]
    assert denials(decision) == [("ordersx", "no_consent"), ("orders_x", "no_consent"), ("order", "no_consent")]


def test_grant_on_a_child_scope_does_not_cover_its_parent_or_siblings():
    state = subject(grant(scopes=("orders.history",)))
    decision = ask(state, None, "marketing", ["orders.history", "orders", "orders.historyx"])
    assert decision.permitted == ["orders.history"]
    assert denials(decision) == [("orders", "no_consent"), ("orders.historyx", "no_consent")]


def test_partner_approval_follows_the_hierarchy():
    state = subject(grant())
    decision = ask(state, "acme", "marketing", ["orders.history", "ordersx", "profile.email"])
    assert decision.permitted == ["orders.history", "profile.email"]
    assert denials(decision) == [("ordersx", "scope_not_approved")]
    narrow = ask(state, "narrow", "marketing", ["orders.history", "orders"])
    assert narrow.permitted == ["orders.history"]
    assert denials(narrow) == [("orders", "scope_not_approved")]


def test_partner_grant_on_a_child_scope():
    state = subject(grant(partner="narrow", scopes=("orders.history",)))
    assert ask(state, "narrow", "marketing", ["orders.history"]).decision == "permit"
    assert only_reason(ask(state, "acme", "marketing", ["orders.history"])) == "no_consent"


# First-party and partner grants


def test_first_party_grant_covers_every_partner():
    state = subject(grant(scopes=("orders",)))
    for partner in ("acme", "beta", "ending", None):
        assert ask(state, partner, "marketing", ["orders"]).permitted == ["orders"]


def test_partner_withdrawal_overrides_the_first_party_grant_for_that_partner_only():
    state = subject(grant(), grant(partner="acme"), withdraw(partner="acme"))
    assert denials(ask(state, "acme", "marketing", ["orders", "profile"])) == [
        ("orders", "consent_withdrawn"), ("profile", "consent_withdrawn")]
    # the partner grant held every approved scope, location too
    assert only_reason(ask(state, "acme", "marketing", ["location"])) == "consent_withdrawn"
    for partner in ("beta", "ending", None):
        assert ask(state, partner, "marketing", ["orders", "profile"]).decision == "permit"


def test_partner_withdrawal_of_some_scopes_leaves_the_rest_to_the_first_party_grant():
    state = subject(grant(scopes=("orders",)), grant(partner="acme", scopes=("profile",)),
                    withdraw(partner="acme"))
    decision = ask(state, "acme", "marketing", ["orders", "profile", "location"])
    assert decision.permitted == ["orders"]
    assert denials(decision) == [("profile", "consent_withdrawn"), ("location", "no_consent")]


def test_partner_grant_speaks_before_the_first_party_withdrawal():
    state = subject(grant(), withdraw(), grant(partner="acme", scopes=("orders",)))
    assert ask(state, "acme", "marketing", ["orders"]).decision == "permit"
    assert denials(ask(state, "acme", "marketing", ["profile"])) == [("profile", "consent_withdrawn")]
    assert denials(ask(state, "beta", "marketing", ["orders"])) == [("orders", "consent_withdrawn")]


# Legal bases without grants


@pytest.mark.parametrize("partner", ["acme", "beta", None])
def test_legitimate_interest_permits_without_grant_until_objection(partner):
    assert ask(subject(), partner, "analytics", ["orders", "profile"]).permitted == ["orders", "profile"]
    objected = subject(obj())
    assert denials(ask(objected, partner, "analytics", ["orders", "profile"])) == [
        ("orders", "objected"), ("profile", "objected")]


def test_objection_scoped_to_a_partner_or_scope():
    to_acme = subject(obj(partner="acme"))
    assert only_reason(ask(to_acme, "acme", "analytics", ["orders"])) == "objected"
    assert ask(to_acme, "beta", "analytics", ["orders"]).decision == "permit"
    assert ask(to_acme, None, "analytics", ["orders"]).decision == "permit"
    to_orders = subject(obj(scopes=("orders",)))
    decision = ask(to_orders, "acme", "analytics", ["orders.history", "profile"])
    assert (decision.decision, decision.permitted, denials(decision)) == (
        "partial", ["profile"], [("orders.history", "objected")])


def test_withdrawing_a_consent_on_a_legitimate_interest_purpose_does_not_deny():
    state = subject(grant("analytics"), withdraw("analytics"))
    assert ask(state, "acme", "analytics", ["orders"]).decision == "permit"


def test_lapsed_partner_grant_does_not_lift_a_first_party_objection():
    """Regression: a withdrawn or expired partner grant used to hide the objection for good."""
    expires = NOW + 5 * DAY
    state = subject(obj(), grant("analytics", partner="acme", expires_at=expires))
    assert ask(state, "acme", "analytics", ["orders"], now=expires - US).decision == "permit"
    assert only_reason(ask(state, "acme", "analytics", ["orders"], now=expires)) == "objected"
    assert only_reason(ask(state, "beta", "analytics", ["orders"], now=expires - US)) == "objected"

    withdrawn = subject(obj(), grant("analytics", partner="acme"))
    assert ask(withdrawn, "acme", "analytics", ["orders"]).decision == "permit"
    play(withdrawn, withdraw("analytics", partner="acme"))
    assert only_reason(ask(withdrawn, "acme", "analytics", ["orders"])) == "objected"


@pytest.mark.parametrize("purpose", ["billing", "tax"])
@pytest.mark.parametrize("partner", ["acme", "beta", None])
def test_contract_and_legal_obligation_permit_always(purpose, partner):
    # a raw objection event: the commands refuse them for these bases, the decision ignores them anyway
    objection = ObjectionRecorded(occurred_at=NOW - DAY, purpose=purpose, partner=partner, scopes=None,
                                  purpose_version=1, source="admin")
    withdrawal = ConsentWithdrawn(occurred_at=NOW - DAY, purpose=purpose, partner=None, scopes=None,
                                  purpose_version=1, source="admin")
    for state in (None, subject(), subject(OPT_OUT), subject(objection), subject(withdrawal)):
        decision = ask(state, partner, purpose, ["orders", "orders.history"])
        assert (decision.decision, decision.permitted) == ("permit", ["orders", "orders.history"])
        assert decision.retain_until == datetime(2034, 1, 31, 12, tzinfo=UTC)
    # but still only within the partner's approved data uses
    if partner is not None:
        assert only_reason(ask(None, partner, purpose, ["profile"])) == "scope_not_approved"


# Partial answers, request order, duplicates, versions


def test_partial_answer_keeps_request_order_and_counts_duplicates_once():
    state = subject(grant(scopes=("orders",)), grant(partner="acme", scopes=("profile",)),
                    withdraw(partner="acme"))
    requested = ["profile.email", "payment", "orders.history", "profile", "location", "orders", "profile.email",
                 "orders", "payment"]
    decision = ask(state, "acme", "marketing", requested)
    assert decision == Decision(
        decision="partial",
        permitted=["orders.history", "orders"],
        denied=[Denied("profile.email", "consent_withdrawn"), Denied("payment", "scope_not_approved"),
                Denied("profile", "consent_withdrawn"), Denied("location", "no_consent")],
        retain_until=NOW + 90 * DAY,
        purpose_version=1,
    )


@pytest.mark.parametrize(
    ("partner", "requested", "expected"),
    [
        ("acme", ["orders", "orders", "orders"], (["orders"], [])),
        ("acme", ["location", "location"], ([], [("location", "no_consent")])),
        ("nobody", ["orders", "profile", "orders"], ([], [("orders", "unknown_partner"),
                                                          ("profile", "unknown_partner")])),
    ],
)
def test_duplicates_are_counted_once(partner, requested, expected):
    decision = ask(subject(grant(scopes=("orders",))), partner, "marketing", requested)
    assert (decision.permitted, denials(decision)) == expected


def test_purpose_version_is_the_current_version_in_every_answer():
    catalog = make_catalog()
    state = subject(grant(), catalog=catalog)
    revise(catalog, "marketing", material=False)
    revise(catalog, "marketing", material=False)
    assert catalog.purposes["marketing"].version == 3
    for partner, scopes, verdict in [
        ("acme", ["orders"], "permit"),
        ("acme", ["orders", "payment"], "partial"),
        ("acme", ["payment"], "deny"),
        ("nobody", ["orders"], "deny"),
        ("sleepy", ["orders"], "deny"),
        (None, ["orders"], "permit"),
    ]:
        decision = ask(state, partner, "marketing", scopes, catalog=catalog)
        assert (decision.decision, decision.purpose_version) == (verdict, 3)
    applied(catalog, retire_purpose(catalog.purposes["marketing"], NOW))
    assert ask(state, "acme", "marketing", ["orders"], catalog=catalog).purpose_version == 3
    assert ask(state, "acme", "nope", ["orders"], catalog=catalog).purpose_version is None


def test_first_party_question_skips_partner_checks():
    state = subject(grant())
    decision = ask(state, None, "marketing", ["payment", "orders", "anything.at.all"])
    assert (decision.decision, decision.permitted) == ("permit", ["payment", "orders", "anything.at.all"])
    # the same scopes for a partner are refused by its approved data uses
    assert denials(ask(state, "acme", "marketing", ["payment", "orders"])) == [("payment", "scope_not_approved")]


def test_decide_does_not_change_its_inputs():
    catalog = make_catalog()
    state = subject(grant(expires_at=NOW + DAY), obj(), catalog=catalog)
    before = (dict(state.records), state.version, state.global_opt_out, dict(catalog.partners),
              dict(catalog.purposes))
    scopes = ["orders", "orders", "payment"]
    ask(state, "acme", "marketing", scopes, now=NOW + 2 * DAY, catalog=catalog)
    decide(catalog, state, "acme", "marketing", scopes, NOW)
    assert scopes == ["orders", "orders", "payment"]
    assert (dict(state.records), state.version, state.global_opt_out, dict(catalog.partners),
            dict(catalog.purposes)) == before


# Properties over random states

_PROPERTY_SCOPES = ("profile", "profile.email", "orders", "orders.history", "location", "payment")
_REQUESTABLE = (*_PROPERTY_SCOPES, "ordersx", "orders.history.2023")
_PROPERTY_CATALOG = make_catalog()
revise(_PROPERTY_CATALOG, "ads", material=True)  # so that reconsent_required can come up


@st.composite
def subject_events(draw):
    kind = draw(st.sampled_from(["granted", "withdrawn", "expired", "objected", "opt_out"]))
    at = NOW - draw(st.integers(1, 100)) * DAY
    if kind == "opt_out":
        return GlobalOptOutRecorded(occurred_at=at, source="gpc")
    fields = dict(
        occurred_at=at,
        purpose=draw(st.sampled_from(["marketing", "ads", "analytics", "profiling", "billing"])),
        partner=draw(st.sampled_from([None, "acme", "beta", "ending"])),
        scopes=draw(st.none() | st.lists(st.sampled_from(_PROPERTY_SCOPES), min_size=1, max_size=3, unique=True)
                    .map(lambda s: tuple(sorted(s)))),
        purpose_version=draw(st.integers(1, 2)),
        source="api",
    )
    if kind == "granted":
        expiry = draw(st.none() | st.integers(-5, 40))
        return ConsentGranted(expires_at=None if expiry is None else NOW + expiry * DAY, **fields)
    if kind == "expired":
        return ConsentExpired(expires_at=at, **fields)
    return (ConsentWithdrawn if kind == "withdrawn" else ObjectionRecorded)(**fields)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(subject_events(), max_size=12),
    partner=st.sampled_from([None, "acme", "beta", "ending", "narrow", "sleepy", "nobody"]),
    purpose=st.sampled_from(["marketing", "ads", "monthly", "analytics", "profiling", "billing", "tax", "old",
                             "nope"]),
    requested=st.lists(st.sampled_from(_REQUESTABLE), min_size=1, max_size=8),
    offset=st.integers(-2, 30),
)
def test_decision_properties(events, partner, purpose, requested, offset):
    state = SubjectConsents("user-1")
    for event in events:
        state.apply(event)
    now = NOW + offset * DAY
    decision = decide(_PROPERTY_CATALOG, state, partner, purpose, list(requested), now)

    unique = list(dict.fromkeys(requested))
    denied = [d.scope for d in decision.denied]
    # permitted and denied partition the deduplicated request, each in request order
    assert sorted(decision.permitted + denied) == sorted(unique)
    assert not set(decision.permitted) & set(denied)
    assert decision.permitted == [s for s in unique if s in decision.permitted]
    assert denied == [s for s in unique if s in denied]
    assert all(d.reason in REASONS for d in decision.denied)
    # the verdict follows from the lists
    assert (decision.decision == "permit") == (not decision.denied)
    assert (decision.decision == "deny") == (not decision.permitted)
    assert (decision.retain_until is None) == (not decision.permitted)
    if decision.permitted:
        retention = _PROPERTY_CATALOG.purposes[purpose].retention
        assert now < decision.retain_until
        assert decision.retain_until <= parse_duration(retention).after(now)
    # each scope is judged on its own: asking for it alone gives the same answer
    for scope in unique:
        alone = decide(_PROPERTY_CATALOG, state, partner, purpose, [scope], now)
        if scope in decision.permitted:
            assert alone.permitted == [scope]
        else:
            assert denials(alone) == [(scope, next(d.reason for d in decision.denied if d.scope == scope))]
