"""A subject's consents: the change_consents command and the state folded from its events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
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
from consent.domain.errors import DomainError
from consent.domain.events import (
    ConsentExpired,
    ConsentGranted,
    ConsentWithdrawn,
    Evidence,
    GlobalOptOutRecorded,
    ObjectionRecorded,
    SubjectErased,
)
from consent.domain.subject import Change, ConsentRecord, SubjectConsents, change_consents

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)
EVIDENCE = Evidence(collection_point="signup", text_shown="We would like to send you offers")

PURPOSES = {
    "marketing": PurposeSpec("Marketing", "Offers", "consent", "P90D"),
    "analytics": PurposeSpec("Analytics", "Usage", "legitimate_interest", "P1Y"),
    "billing": PurposeSpec("Billing", "Invoices", "contract", "P10Y"),
    "tax": PurposeSpec("Tax", "Tax records", "legal_obligation", "P10Y"),
}
SCOPES = ("profile", "profile.email", "orders", "orders.history", "location")
PARTNERS = {
    # partner id: (status, data uses)
    "acme": ("active", {"marketing": ("profile.email", "orders"), "analytics": ("orders",)}),
    "sandy": ("sandbox", {"marketing": ("profile",)}),
    "sleepy": ("active", {"marketing": ("profile",)}),
    "gone": ("active", {"marketing": ("profile",)}),
}


def build(catalog: Catalog, events: list) -> None:
    for event in events:
        catalog.apply(event)


def make_catalog() -> Catalog:
    """Built the way the service builds it: by applying the events the commands return."""
    catalog = Catalog()
    for purpose_id, spec in PURPOSES.items():
        build(catalog, define_purpose(None, purpose_id, spec, False, NOW))
    for scope_id in SCOPES:
        build(catalog, define_scope(None, scope_id, ScopeSpec(scope_id, "", "low"), NOW))
    for partner_id, (status, data_uses) in PARTNERS.items():
        spec = PartnerSpec(name=partner_id.title(), status=status, data_uses=data_uses)
        build(catalog, register_partner(None, partner_id, spec, catalog, NOW))
    build(catalog, suspend_partner(catalog.partners["sleepy"], NOW))
    build(catalog, terminate_partner(catalog.partners["gone"], NOW))
    return catalog


CATALOG = make_catalog()


def run(state: SubjectConsents, *changes: Change, catalog: Catalog = CATALOG, now: datetime = NOW,
        source="web") -> list:
    """change_consents, then fold the events into `state` as the service would."""
    events = change_consents(state, catalog, list(changes), source, EVIDENCE, now)
    for event in events:
        state.apply(event)
    return events


def subject(*changes: Change, catalog: Catalog = CATALOG, now: datetime = NOW) -> SubjectConsents:
    state = SubjectConsents("user-1")
    run(state, *changes, catalog=catalog, now=now)
    return state


def refusal(state: SubjectConsents, *changes: Change, catalog: Catalog = CATALOG, now: datetime = NOW) -> str:
    before = (state.version, dict(state.records), state.global_opt_out)
    with pytest.raises(DomainError) as info:
        change_consents(state, catalog, list(changes), "web", EVIDENCE, now)
    assert (state.version, state.records, state.global_opt_out) == before  # the state is untouched
    return info.value.code


def grant(purpose="marketing", partner=None, scopes=None, expires_at=None) -> Change:
    return Change(purpose=purpose, action="grant", partner=partner, scopes=scopes, expires_at=expires_at)


def withdraw(purpose="marketing", partner=None, scopes=None, expires_at=None) -> Change:
    return Change(purpose=purpose, action="withdraw", partner=partner, scopes=scopes, expires_at=expires_at)


def obj(purpose="analytics", partner=None, scopes=None) -> Change:
    return Change(purpose=purpose, action="object", partner=partner, scopes=scopes)


def test_catalog_fixture_is_what_the_tests_assume():
    assert CATALOG.partners["sleepy"].status == "suspended"
    assert CATALOG.partners["gone"].status == "terminated"
    assert CATALOG.partners["sandy"].status == "sandbox"
    assert CATALOG.partners["acme"].approved_scopes("marketing") == ("orders", "profile.email")


# Grants


@pytest.mark.parametrize("scopes", [None, ("profile",), ("orders.history", "profile.email")])
def test_first_party_grant(scopes):
    state = SubjectConsents("user-1")
    events = run(state, grant(scopes=scopes), source="app")

    assert events == [ConsentGranted(occurred_at=NOW, purpose="marketing", partner=None, scopes=scopes,
                                     purpose_version=1, source="app", evidence=EVIDENCE, expires_at=None)]
    record = state.records[("marketing", None)]
    assert (record.status, record.scopes, record.partner, record.updated_at) == ("granted", scopes, None, NOW)
    assert record.key == ("marketing", None)
    assert state.version == 1


def test_grant_scopes_are_sorted_and_deduplicated():
    [event] = run(SubjectConsents("u"), grant(scopes=("profile", "location", "profile")))
    assert event.scopes == ("location", "profile")


@pytest.mark.parametrize(
    ("partner", "purpose", "expected_scopes"),
    [
        ("acme", "marketing", ("orders", "profile.email")),
        ("acme", "analytics", ("orders",)),
        ("sandy", "marketing", ("profile",)),  # sandbox partners may take grants
    ],
)
def test_partner_grant_without_scopes_stores_the_approved_scopes(partner, purpose, expected_scopes):
    state = SubjectConsents("user-1")
    [event] = run(state, grant(purpose, partner))
    assert event.scopes == expected_scopes
    assert state.records[(purpose, partner)].scopes == expected_scopes
    assert state.records[(purpose, partner)].status == "granted"


def test_partner_grant_does_not_widen_when_data_uses_grow():
    catalog = make_catalog()
    state = subject(grant(partner="acme"), catalog=catalog)
    spec = PartnerSpec(name="Acme", status="active",
                       data_uses={"marketing": ("profile.email", "orders", "location")})
    build(catalog, register_partner(catalog.partners["acme"], "acme", spec, catalog, LATER))
    assert state.records[("marketing", "acme")].scopes == ("orders", "profile.email")


@pytest.mark.parametrize(
    "scopes",
    [("orders.history",), ("orders", "profile.email"), ("profile.email",)],
)
def test_partner_grant_within_approved_data_uses(scopes):
    [event] = run(SubjectConsents("u"), grant(partner="acme", scopes=scopes))
    assert event.scopes == tuple(sorted(scopes))


@pytest.mark.parametrize(
    ("purpose", "partner", "scopes"),
    [
        ("marketing", "acme", ("profile",)),  # broader than the approved profile.email
        ("marketing", "acme", ("location",)),
        ("marketing", "acme", ("orders", "location")),  # one bad scope spoils the change
        ("analytics", "acme", ("profile.email",)),  # approved for another purpose only
        ("analytics", "sandy", None),  # no data uses at all for the purpose
        ("analytics", "sandy", ("profile",)),
    ],
)
def test_grant_outside_partner_data_uses_is_refused(purpose, partner, scopes):
    assert refusal(SubjectConsents("u"), grant(purpose, partner, scopes)) == "scope_not_approved"


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (grant("billing"), "not_consent_based"),
        (grant("tax"), "not_consent_based"),
        (withdraw("billing"), "not_consent_based"),
        (obj("tax"), "not_consent_based"),
        (grant("billing", "acme"), "not_consent_based"),
        (grant("nope"), "unknown_purpose"),
        (withdraw("nope"), "unknown_purpose"),
        (grant("Marketing"), "validation_failed"),
        (grant(partner="nobody"), "unknown_partner"),
        (withdraw(partner="nobody"), "unknown_partner"),
        (obj(partner="nobody"), "unknown_partner"),
        (grant(partner="Acme"), "validation_failed"),
        (grant(scopes=("billing",)), "unknown_scope"),
        (grant(scopes=("ordersx",)), "unknown_scope"),
        (grant(partner="acme", scopes=("billing",)), "unknown_scope"),
        (grant(scopes=("Orders",)), "validation_failed"),
        (grant(scopes=()), "validation_failed"),
        (grant(partner="sleepy"), "partner_inactive"),
        (grant(partner="sleepy", scopes=("profile",)), "partner_inactive"),
        (grant(partner="gone"), "partner_inactive"),
    ],
)
def test_change_refused(change, code):
    assert refusal(SubjectConsents("u"), change) == code


@pytest.mark.parametrize(
    ("expires_at", "action"),
    [
        (NOW - timedelta(seconds=1), "grant"),
        (NOW, "grant"),  # expiring now is not in the future
        (NOW.replace(tzinfo=None) + timedelta(days=1), "grant"),  # naive
        (NOW + timedelta(days=1), "withdraw"),
        (NOW + timedelta(days=1), "object"),
    ],
)
def test_bad_expires_at_is_refused(expires_at, action):
    state = subject(grant())  # so a withdraw would otherwise emit an event
    purpose = "analytics" if action == "object" else "marketing"
    change = Change(purpose=purpose, action=action, expires_at=expires_at)
    assert refusal(state, change) == "validation_failed"


def test_withdraw_with_expiry_refused_even_when_nothing_is_granted():
    assert refusal(SubjectConsents("u"), withdraw(expires_at=NOW + timedelta(days=1))) == "validation_failed"


def test_grant_with_expiry_is_recorded():
    expires = NOW + timedelta(days=30)
    state = SubjectConsents("u")
    [event] = run(state, grant(partner="acme", expires_at=expires))
    assert event.expires_at == expires
    assert state.records[("marketing", "acme")].expires_at == expires


@pytest.mark.parametrize(
    ("offset", "expected"),
    [
        (timedelta(days=-1), "granted"),
        (timedelta(microseconds=-1), "granted"),
        (timedelta(0), "expired"),
        (timedelta(microseconds=1), "expired"),
        (timedelta(days=365), "expired"),
    ],
)
def test_status_at_around_expiry(offset, expected):
    expires = NOW + timedelta(days=30)
    state = subject(grant(expires_at=expires))
    record = state.records[("marketing", None)]
    assert record.status == "granted"
    assert record.status_at(expires + offset) == expected


@pytest.mark.parametrize("status", ["withdrawn", "objected", "expired"])
def test_status_at_leaves_other_statuses_alone(status):
    record = ConsentRecord(purpose="marketing", partner=None, scopes=None, status=status,
                           expires_at=NOW, purpose_version=1, updated_at=NOW)
    assert record.status_at(NOW + timedelta(days=1)) == status


def test_grant_without_expiry_never_expires():
    record = subject(grant()).records[("marketing", None)]
    assert record.status_at(datetime(9999, 1, 1, tzinfo=UTC)) == "granted"


def test_grant_records_the_current_purpose_version():
    catalog = make_catalog()
    for n, material in enumerate((False, True), start=2):
        spec = structs.replace(PURPOSES["marketing"], description=f"Offers, text {n}")
        build(catalog, define_purpose(catalog.purposes["marketing"], "marketing", spec, material, NOW))
    assert catalog.purposes["marketing"].version == 3

    state = SubjectConsents("u")
    [event] = run(state, grant(partner="acme"), catalog=catalog)
    assert event.purpose_version == 3
    assert state.records[("marketing", "acme")].purpose_version == 3


def test_old_grant_keeps_the_version_it_was_given_under():
    catalog = make_catalog()
    state = subject(grant(scopes=("profile", "location")), catalog=catalog)
    spec = structs.replace(PURPOSES["marketing"], description="Offers, new text")
    build(catalog, define_purpose(catalog.purposes["marketing"], "marketing", spec, True, NOW))
    run(state, withdraw(scopes=("location",)), catalog=catalog, now=LATER)
    record = state.records[("marketing", None)]
    assert (record.status, record.scopes, record.purpose_version) == ("granted", ("profile",), 1)


def test_grant_on_retired_purpose_refused_but_withdraw_allowed():
    catalog = make_catalog()
    state = subject(grant(), catalog=catalog)
    build(catalog, retire_purpose(catalog.purposes["marketing"], NOW))
    assert refusal(state, grant(), catalog=catalog) == "purpose_retired"
    assert [type(e) for e in run(state, withdraw(), catalog=catalog)] == [ConsentWithdrawn]
    assert state.records[("marketing", None)].status == "withdrawn"


@pytest.mark.parametrize("partner", ["sleepy", "gone"])
def test_withdraw_from_inactive_partner_allowed(partner):
    catalog = Catalog()
    for purpose_id, spec in PURPOSES.items():
        build(catalog, define_purpose(None, purpose_id, spec, False, NOW))
    for scope_id in SCOPES:
        build(catalog, define_scope(None, scope_id, ScopeSpec(scope_id, "", "low"), NOW))
    build(catalog, register_partner(None, partner, PartnerSpec(partner, "active", {"marketing": ("profile",)}),
                                    catalog, NOW))
    state = subject(grant(partner=partner), catalog=catalog)
    build(catalog, (suspend_partner if partner == "sleepy" else terminate_partner)(catalog.partners[partner], NOW))
    [event] = run(state, withdraw(partner=partner), catalog=catalog)
    assert (type(event), event.scopes) == (ConsentWithdrawn, ("profile",))
    assert state.records[("marketing", partner)].status == "withdrawn"


# Withdrawals and objections


@pytest.mark.parametrize(
    ("granted", "partner"),
    [(None, None), (("profile", "location"), None), (None, "acme"), (("orders",), "acme")],
)
def test_withdraw_after_grant(granted, partner):
    state = subject(grant(partner=partner, scopes=granted))
    granted_scopes = state.records[("marketing", partner)].scopes
    [event] = run(state, withdraw(partner=partner), now=LATER)
    assert isinstance(event, ConsentWithdrawn)
    assert event.scopes == granted_scopes  # the whole grant is taken back
    record = state.records[("marketing", partner)]
    assert (record.status, record.updated_at) == ("withdrawn", LATER)


@pytest.mark.parametrize(
    ("setup", "change"),
    [
        ((), withdraw()),
        ((), withdraw(partner="acme")),
        ((), withdraw(scopes=("profile",))),
        ((grant(),), withdraw(partner="acme")),  # a first-party grant is a different record
        ((grant(partner="acme"),), withdraw()),
        ((grant(partner="acme"),), withdraw("analytics", "acme")),
        ((grant(), withdraw()), withdraw()),  # already withdrawn
        ((obj("analytics"),), withdraw("analytics")),
    ],
)
def test_withdraw_with_nothing_granted_emits_nothing(setup, change):
    state = subject(*setup)
    before = (state.version, dict(state.records))
    assert run(state, change, now=LATER) == []
    assert (state.version, state.records) == before


def test_withdraw_of_an_expired_grant_emits_nothing():
    state = subject(grant(expires_at=NOW + timedelta(minutes=5)))
    assert run(state, withdraw(), now=NOW + timedelta(minutes=5)) == []
    assert state.records[("marketing", None)].status_at(NOW + timedelta(minutes=5)) == "expired"


@pytest.mark.parametrize(
    ("granted", "withdrawn", "remaining"),
    [
        (("location", "orders", "profile"), ("location",), ("orders", "profile")),
        (("location", "orders", "profile"), ("profile", "location"), ("orders",)),
        (("orders.history", "profile.email"), ("orders.history",), ("profile.email",)),
    ],
)
def test_partial_withdraw_leaves_the_rest_granted(granted, withdrawn, remaining):
    expires = NOW + timedelta(days=10)
    state = subject(grant(scopes=granted, expires_at=expires))
    [event] = run(state, withdraw(scopes=withdrawn), now=LATER)
    assert isinstance(event, ConsentWithdrawn)
    assert set(event.scopes) == set(withdrawn)
    record = state.records[("marketing", None)]
    assert (record.status, record.scopes, record.expires_at, record.updated_at) == (
        "granted", remaining, expires, LATER)

    # withdrawing what remains ends the grant
    run(state, withdraw(scopes=remaining), now=LATER)
    assert state.records[("marketing", None)].status == "withdrawn"


def test_partial_withdraw_from_partner_grant():
    state = subject(grant(partner="acme"))
    run(state, withdraw(partner="acme", scopes=("orders",)))
    record = state.records[("marketing", "acme")]
    assert (record.status, record.scopes) == ("granted", ("profile.email",))


def test_withdrawing_every_named_scope_withdraws_the_grant():
    state = subject(grant(scopes=("profile", "location")))
    [event] = run(state, withdraw(scopes=("location", "profile")))
    assert event.scopes == ("location", "profile")
    assert state.records[("marketing", None)].status == "withdrawn"


@pytest.mark.parametrize(
    ("granted", "withdrawn"),
    [
        (None, ("profile",)),  # the grant covers every scope: withdraw it whole
        (("profile",), ("location",)),
        (("profile",), ("profile", "location")),
        (("orders",), ("orders.history",)),  # no carving a sub-scope out of a grant
    ],
)
def test_partial_withdraw_of_what_is_not_held_is_refused(granted, withdrawn):
    state = subject(grant(scopes=granted))
    assert refusal(state, withdraw(scopes=withdrawn)) == "validation_failed"


@pytest.mark.parametrize(
    ("purpose", "partner", "scopes"),
    [("analytics", None, None), ("analytics", "acme", None), ("analytics", None, ("orders",))],
)
def test_objection(purpose, partner, scopes):
    state = SubjectConsents("u")
    [event] = run(state, obj(purpose, partner, scopes))
    assert isinstance(event, ObjectionRecorded)
    assert (event.purpose, event.partner, event.scopes) == (purpose, partner, scopes)
    record = state.records[(purpose, partner)]
    assert record.status == "objected"
    assert record.status_at(LATER) == "objected"


def test_objection_replaces_an_earlier_grant():
    state = subject(grant("analytics"))
    run(state, obj("analytics"))
    assert state.records[("analytics", None)].status == "objected"


# Several changes in one call


@pytest.mark.parametrize(
    ("changes", "expected_types", "final"),
    [
        ((grant(), withdraw()), [ConsentGranted, ConsentWithdrawn], "withdrawn"),
        ((withdraw(), grant()), [ConsentGranted], "granted"),
        ((grant(), withdraw(), grant()), [ConsentGranted, ConsentWithdrawn, ConsentGranted], "granted"),
        ((grant(scopes=("profile",)), grant(scopes=("location",))), [ConsentGranted, ConsentGranted], "granted"),
        ((grant("analytics"), obj("analytics")), [ConsentGranted, ObjectionRecorded], "objected"),
    ],
)
def test_changes_fold_in_order(changes, expected_types, final):
    state = SubjectConsents("u")
    events = change_consents(state, CATALOG, list(changes), "web", EVIDENCE, NOW)
    assert [type(e) for e in events] == expected_types
    assert state.version == 0 and state.records == {}  # the command itself does not mutate the state
    for event in events:
        state.apply(event)
    purpose = changes[-1].purpose
    assert state.records[(purpose, None)].status == final
    assert state.version == len(expected_types)


def test_later_grant_adds_to_earlier_scopes():
    state = subject(grant(scopes=("profile",)), grant(scopes=("location",)))
    assert state.records[("marketing", None)].scopes == ("location", "profile")


def test_grant_after_withdrawal_starts_afresh():
    state = subject(grant(scopes=("profile",)), Change(purpose="marketing", action="withdraw"),
                    grant(scopes=("location",)))
    assert state.records[("marketing", None)].scopes == ("location",)


def test_changes_on_different_keys_are_independent():
    state = subject(grant(), grant(partner="acme"), obj("analytics"), withdraw())
    assert {key: r.status for key, r in state.records.items()} == {
        ("marketing", None): "withdrawn",
        ("marketing", "acme"): "granted",
        ("analytics", None): "objected",
    }
    assert state.version == 4


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (grant(partner="sleepy"), "partner_inactive"),
        (grant("billing"), "not_consent_based"),
        (grant(partner="acme", scopes=("location",)), "scope_not_approved"),
        (withdraw(scopes=("orders",)), "validation_failed"),  # refers to the grant made just before
    ],
)
def test_all_or_nothing(bad, code):
    state = subject(grant("analytics"))
    assert refusal(state, grant(scopes=("profile",)), bad, obj("analytics")) == code
    assert state.records[("analytics", None)].status == "granted"
    assert ("marketing", None) not in state.records


# Folding events


def _change_fields(purpose="marketing", partner=None, scopes=None, at=NOW):
    return dict(occurred_at=at, purpose=purpose, partner=partner, scopes=scopes, purpose_version=1,
                source="api")


def test_apply_bumps_version_per_event_whatever_the_event():
    state = SubjectConsents("u")
    events = [
        ConsentGranted(**_change_fields()),
        GlobalOptOutRecorded(occurred_at=NOW, source="gpc"),
        GlobalOptOutRecorded(occurred_at=NOW, source="gpc"),
        ConsentWithdrawn(**_change_fields()),
        SubjectErased(occurred_at=NOW),
    ]
    for n, event in enumerate(events, start=1):
        state.apply(event)
        assert state.version == n


def test_apply_starts_from_the_given_version():
    state = SubjectConsents("u", version=7)
    state.apply(ConsentGranted(**_change_fields()))
    assert state.version == 8


def test_consent_expired_event_marks_the_record_expired():
    expires = NOW + timedelta(days=1)
    state = SubjectConsents("u")
    state.apply(ConsentGranted(expires_at=expires, **_change_fields()))
    state.apply(ConsentExpired(expires_at=expires, **_change_fields(at=expires)))
    record = state.records[("marketing", None)]
    assert (record.status, record.expires_at, record.updated_at) == ("expired", expires, expires)


def test_global_opt_out():
    state = subject(grant())
    assert state.global_opt_out is False
    state.apply(GlobalOptOutRecorded(occurred_at=NOW, source="gpc"))
    assert state.global_opt_out is True
    assert state.records[("marketing", None)].status == "granted"  # consents untouched


def test_subject_erased_clears_everything():
    state = subject(grant(), grant(partner="acme"), obj("analytics"))
    state.apply(GlobalOptOutRecorded(occurred_at=NOW, source="gpc"))
    version = state.version
    state.apply(SubjectErased(occurred_at=LATER))
    assert state.records == {}
    assert state.global_opt_out is False
    assert state.version == version + 1
    # and a withdraw afterwards finds nothing to withdraw
    assert run(state, withdraw(), now=LATER) == []


def test_copy_is_independent():
    state = subject(grant())
    copy = state.copy()
    copy.apply(ConsentWithdrawn(**_change_fields()))
    copy.apply(GlobalOptOutRecorded(occurred_at=NOW, source="gpc"))
    assert state.records[("marketing", None)].status == "granted"
    assert (state.version, state.global_opt_out) == (1, False)
    assert (copy.version, copy.global_opt_out) == (3, True)
