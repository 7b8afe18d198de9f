"""Catalog commands (purposes, scopes, partners) and the state folded from their events."""

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
    reinstate_partner,
    retire_purpose,
    suspend_partner,
    terminate_partner,
)
from consent.domain.errors import Conflict, DomainError
from consent.domain.events import (
    PartnerRegistered,
    PartnerReinstated,
    PartnerSuspended,
    PartnerTerminated,
    PartnerUpdated,
    PurposeDefined,
    PurposeRetired,
    PurposeRevised,
    ScopeDefined,
)

NOW = datetime(2024, 5, 1, 12, tzinfo=UTC)
LATER = NOW + timedelta(days=1)

MARKETING = PurposeSpec(title="Marketing", description="Offers by e-mail", legal_basis="consent",
                        retention="P90D", sale_or_sharing=False)
ANALYTICS = PurposeSpec(title="Analytics", description="Usage statistics", legal_basis="legitimate_interest",
                        retention="P1Y")


def applied(catalog: Catalog, events: list) -> list:
    for event in events:
        catalog.apply(event)
    return events


def catalog_with_purpose(spec: PurposeSpec = MARKETING, purpose_id: str = "marketing") -> Catalog:
    catalog = Catalog()
    applied(catalog, define_purpose(None, purpose_id, spec, False, NOW))
    return catalog


def base_catalog() -> Catalog:
    """Purposes `marketing` and `analytics`, scopes `profile`, `orders`, `orders.history`."""
    catalog = catalog_with_purpose()
    applied(catalog, define_purpose(None, "analytics", ANALYTICS, False, NOW))
    for scope_id in ("profile", "orders", "orders.history"):
        applied(catalog, define_scope(None, scope_id, ScopeSpec(scope_id.title(), "", "low"), NOW))
    return catalog


def partner_spec(status="active", data_uses=None, contract_ends_at=None, name="Acme") -> PartnerSpec:
    if data_uses is None:
        data_uses = {"marketing": ("profile",)}
    return PartnerSpec(name=name, status=status, data_uses=data_uses, contract_ends_at=contract_ends_at)


def catalog_with_partner(status="active", partner_id="acme") -> Catalog:
    catalog = base_catalog()
    applied(catalog, register_partner(None, partner_id, partner_spec(status), catalog, NOW))
    return catalog


def code_of(fn, *args, error=DomainError) -> str:
    with pytest.raises(error) as info:
        fn(*args)
    return info.value.code


# Purposes


def test_define_purpose_starts_at_version_1():
    events = define_purpose(None, "marketing", MARKETING, False, NOW)
    assert events == [PurposeDefined(occurred_at=NOW, purpose_id="marketing", title="Marketing",
                                     description="Offers by e-mail", legal_basis="consent",
                                     retention="P90D", sale_or_sharing=False, version=1)]
    catalog = Catalog()
    applied(catalog, events)
    purpose = catalog.purposes["marketing"]
    assert (purpose.version, purpose.status, purpose.reconsent_below) == (1, "active", 1)
    assert (purpose.title, purpose.legal_basis, purpose.retention) == ("Marketing", "consent", "P90D")


@pytest.mark.parametrize(
    ("purpose_id", "retention"),
    [("Marketing", "P90D"), ("mark.eting", "P90D"), ("a" * 65, "P90D"), ("marketing", "90D"),
     ("marketing", "P"), ("marketing", "P1.5D")],
)
def test_define_purpose_validates_id_and_retention(purpose_id, retention):
    spec = structs.replace(MARKETING, retention=retention)
    assert code_of(define_purpose, None, purpose_id, spec, False, NOW) == "validation_failed"


@pytest.mark.parametrize("material_change", [False, True])
def test_same_purpose_spec_again_emits_nothing(material_change):
    catalog = catalog_with_purpose()
    assert define_purpose(catalog.purposes["marketing"], "marketing", MARKETING, material_change, LATER) == []


@pytest.mark.parametrize(
    "change",
    [
        {"title": "Marketing offers"},
        {"description": "Offers by e-mail and SMS"},
        {"retention": "P180D"},
        {"sale_or_sharing": True},
        {"legal_basis": "legitimate_interest"},
    ],
)
@pytest.mark.parametrize("material_change", [False, True])
def test_changed_purpose_is_revised_with_next_version(change, material_change):
    catalog = catalog_with_purpose()
    applied(catalog, define_purpose(catalog.purposes["marketing"], "marketing",
                                    structs.replace(MARKETING, title="Marketing v2"), False, NOW))
    assert catalog.purposes["marketing"].version == 2
    spec = structs.replace(structs.replace(MARKETING, title="Marketing v2"), **change)

    events = define_purpose(catalog.purposes["marketing"], "marketing", spec, material_change, LATER)

    assert len(events) == 1
    revised = events[0]
    assert isinstance(revised, PurposeRevised)
    assert (revised.version, revised.material, revised.occurred_at) == (3, material_change, LATER)
    for field, value in change.items():
        assert getattr(revised, field) == value
    applied(catalog, events)
    purpose = catalog.purposes["marketing"]
    assert purpose.version == 3
    for field, value in change.items():
        assert getattr(purpose, field) == value


@pytest.mark.parametrize(
    ("materials", "expected_versions", "expected_reconsent_below"),
    [
        ((False,), (1, 2), (1, 1)),
        ((True,), (1, 2), (1, 2)),
        ((True, False), (1, 2, 3), (1, 2, 2)),  # a later minor revision keeps the material threshold
        ((False, True), (1, 2, 3), (1, 1, 3)),
        ((True, True, False), (1, 2, 3, 4), (1, 2, 3, 3)),
    ],
)
def test_material_revision_sets_reconsent_below(materials, expected_versions, expected_reconsent_below):
    catalog = catalog_with_purpose()
    seen = [(catalog.purposes["marketing"].version, catalog.purposes["marketing"].reconsent_below)]
    for n, material in enumerate(materials, start=2):
        spec = structs.replace(MARKETING, description=f"text {n}")
        applied(catalog, define_purpose(catalog.purposes["marketing"], "marketing", spec, material, NOW))
        seen.append((catalog.purposes["marketing"].version, catalog.purposes["marketing"].reconsent_below))
    assert tuple(v for v, _ in seen) == expected_versions
    assert tuple(r for _, r in seen) == expected_reconsent_below


def test_retire_purpose():
    catalog = catalog_with_purpose()
    events = retire_purpose(catalog.purposes["marketing"], LATER)
    assert events == [PurposeRetired(occurred_at=LATER, purpose_id="marketing")]
    applied(catalog, events)
    purpose = catalog.purposes["marketing"]
    assert purpose.status == "retired"
    assert purpose.version == 1  # retiring is not a revision
    assert retire_purpose(purpose, LATER) == []  # retiring twice: no event


def test_retired_purpose_cannot_be_revised():
    catalog = catalog_with_purpose()
    applied(catalog, retire_purpose(catalog.purposes["marketing"], NOW))
    changed = structs.replace(MARKETING, title="Changed")
    assert code_of(define_purpose, catalog.purposes["marketing"], "marketing", changed, False, LATER,
                   error=Conflict) == "purpose_retired"


def test_same_body_on_a_retired_purpose_is_a_no_op():
    catalog = catalog_with_purpose()
    applied(catalog, retire_purpose(catalog.purposes["marketing"], NOW))
    assert define_purpose(catalog.purposes["marketing"], "marketing", MARKETING, False, LATER) == []


# Scopes


def test_define_scope_and_redefine():
    catalog = Catalog()
    spec = ScopeSpec(title="E-mail", description="Address", sensitivity="medium")
    events = define_scope(None, "profile.email", spec, NOW)
    assert events == [ScopeDefined(occurred_at=NOW, scope_id="profile.email", title="E-mail",
                                   description="Address", sensitivity="medium")]
    applied(catalog, events)
    assert catalog.scopes["profile.email"].sensitivity == "medium"

    assert define_scope(catalog.scopes["profile.email"], "profile.email", spec, LATER) == []

    changed = define_scope(catalog.scopes["profile.email"], "profile.email",
                           structs.replace(spec, sensitivity="high"), LATER)
    assert [type(e) for e in changed] == [ScopeDefined]
    applied(catalog, changed)
    assert catalog.scopes["profile.email"].sensitivity == "high"


@pytest.mark.parametrize("scope_id", ["Profile", "profile..email", "profile.", "pro file"])
def test_define_scope_validates_id(scope_id):
    assert code_of(define_scope, None, scope_id, ScopeSpec("t", "d", "low"), NOW) == "validation_failed"


@pytest.mark.parametrize(
    ("scope", "known"),
    [("orders", True), ("orders.history", True), ("orders.history.lines", True), ("orders.returns", True),
     ("profile.email", True), ("ordersx", False), ("order", False), ("billing", False), ("billing.orders", False)],
)
def test_scope_known_through_a_covering_scope(scope, known):
    assert base_catalog().scope_known(scope) is known


# Partners


def test_register_partner():
    catalog = base_catalog()
    ends = datetime(2025, 1, 1, tzinfo=UTC)
    spec = partner_spec("sandbox", {"marketing": ("profile", "orders.history", "profile"),
                                    "analytics": ("orders",)}, ends)
    events = register_partner(None, "acme", spec, catalog, NOW)
    assert events == [PartnerRegistered(occurred_at=NOW, partner_id="acme", name="Acme", status="sandbox",
                                        data_uses={"analytics": ("orders",),
                                                   "marketing": ("orders.history", "profile")},
                                        contract_ends_at=ends)]
    applied(catalog, events)
    partner = catalog.partners["acme"]
    assert (partner.status, partner.base_status, partner.contract_ends_at) == ("sandbox", "sandbox", ends)
    assert partner.approved_scopes("marketing") == ("orders.history", "profile")
    assert partner.approved_scopes("unknown") == ()


@pytest.mark.parametrize(
    ("data_uses", "code"),
    [
        ({"nope": ("profile",)}, "unknown_purpose"),
        ({"marketing": ("billing",)}, "unknown_scope"),
        ({"marketing": ("profile", "ordersx")}, "unknown_scope"),
        ({"marketing": ("Profile",)}, "validation_failed"),
        ({"marketing": ("profile",), "nope": ()}, "unknown_purpose"),
    ],
)
def test_register_partner_refuses_unknown_data_uses(data_uses, code):
    catalog = base_catalog()
    assert code_of(register_partner, None, "acme", partner_spec(data_uses=data_uses), catalog, NOW) == code


def test_register_partner_refuses_retired_purpose():
    catalog = base_catalog()
    applied(catalog, retire_purpose(catalog.purposes["marketing"], NOW))
    assert code_of(register_partner, None, "acme", partner_spec(), catalog, NOW) == "purpose_retired"


@pytest.mark.parametrize("scope", ["profile.email", "orders.history.lines", "orders.history"])
def test_register_partner_accepts_sub_scope_of_defined_scope(scope):
    catalog = base_catalog()
    events = register_partner(None, "acme", partner_spec(data_uses={"marketing": (scope,)}), catalog, NOW)
    applied(catalog, events)
    assert catalog.partners["acme"].data_uses == {"marketing": (scope,)}


@pytest.mark.parametrize(
    ("partner_id", "spec_change"),
    [
        ("acme", {"contract_ends_at": datetime(2025, 1, 1)}),  # naive: no time zone
        ("Acme", {}),
        ("acme corp", {}),
        ("acme.eu", {}),
        ("a" * 65, {}),
    ],
)
def test_register_partner_validation(partner_id, spec_change):
    catalog = base_catalog()
    spec = structs.replace(partner_spec(), **spec_change)
    assert code_of(register_partner, None, partner_id, spec, catalog, NOW) == "validation_failed"


@pytest.mark.parametrize(
    ("approved", "scope", "expected"),
    [(("orders",), "orders.history", True), (("orders.history",), "orders", False),
     (("orders",), "ordersx", False), ((), "orders", False)],
)
def test_partner_approves_through_coverage(approved, scope, expected):
    catalog = base_catalog()
    applied(catalog, register_partner(None, "acme", partner_spec(data_uses={"marketing": approved}), catalog, NOW))
    assert catalog.partners["acme"].approves("marketing", scope) is expected
    assert catalog.partners["acme"].approves("analytics", scope) is False


@pytest.mark.parametrize("base", ["sandbox", "active"])
def test_suspend_then_reinstate_returns_to_base_status(base):
    catalog = catalog_with_partner(base)
    suspended = suspend_partner(catalog.partners["acme"], NOW)
    assert suspended == [PartnerSuspended(occurred_at=NOW, partner_id="acme")]
    applied(catalog, suspended)
    assert catalog.partners["acme"].status == "suspended"
    assert suspend_partner(catalog.partners["acme"], NOW) == []  # already suspended

    reinstated = reinstate_partner(catalog.partners["acme"], LATER)
    assert reinstated == [PartnerReinstated(occurred_at=LATER, partner_id="acme")]
    applied(catalog, reinstated)
    assert catalog.partners["acme"].status == base
    assert reinstate_partner(catalog.partners["acme"], LATER) == []  # not suspended


@pytest.mark.parametrize("base", ["sandbox", "active"])
def test_update_of_suspended_partner_keeps_it_suspended(base):
    catalog = catalog_with_partner(base)
    applied(catalog, suspend_partner(catalog.partners["acme"], NOW))
    new_status = "active" if base == "sandbox" else "sandbox"
    spec = partner_spec(new_status, {"marketing": ("profile", "orders")}, name="Acme Ltd")

    events = register_partner(catalog.partners["acme"], "acme", spec, catalog, LATER)

    assert [type(e) for e in events] == [PartnerUpdated]
    applied(catalog, events)
    partner = catalog.partners["acme"]
    assert partner.status == "suspended"
    assert (partner.name, partner.base_status) == ("Acme Ltd", new_status)
    assert partner.data_uses == {"marketing": ("orders", "profile")}
    applied(catalog, reinstate_partner(partner, LATER))
    assert catalog.partners["acme"].status == new_status  # reinstated to the updated base status


@pytest.mark.parametrize("base", ["sandbox", "active"])
def test_update_partner(base):
    catalog = catalog_with_partner(base)
    same = register_partner(catalog.partners["acme"], "acme", partner_spec(base), catalog, LATER)
    assert same == []
    # data uses are compared after normalising (sorted, deduplicated)
    reordered = partner_spec(base, {"marketing": ("profile", "profile")})
    assert register_partner(catalog.partners["acme"], "acme", reordered, catalog, LATER) == []

    promoted = register_partner(catalog.partners["acme"], "acme", partner_spec("active", name="Acme 2"),
                                catalog, LATER)
    assert [type(e) for e in promoted] == [PartnerUpdated]
    applied(catalog, promoted)
    assert (catalog.partners["acme"].status, catalog.partners["acme"].name) == ("active", "Acme 2")


@pytest.mark.parametrize("suspended_first", [False, True])
def test_terminate_is_final(suspended_first):
    catalog = catalog_with_partner("active")
    if suspended_first:
        applied(catalog, suspend_partner(catalog.partners["acme"], NOW))
    events = terminate_partner(catalog.partners["acme"], LATER)
    assert events == [PartnerTerminated(occurred_at=LATER, partner_id="acme")]
    applied(catalog, events)
    partner = catalog.partners["acme"]
    assert partner.status == "terminated"
    assert terminate_partner(partner, LATER) == []  # terminating twice: no event

    for command in (suspend_partner, reinstate_partner):
        assert code_of(command, partner, LATER, error=Conflict) == "partner_terminated"
    assert code_of(register_partner, partner, "acme", partner_spec("active"), catalog, LATER,
                   error=Conflict) == "partner_terminated"
    assert catalog.partners["acme"].status == "terminated"


def test_lookups_raise_not_found():
    catalog = base_catalog()
    assert catalog.purpose("marketing").id == "marketing"
    assert code_of(catalog.purpose, "nope") == "not_found"
    assert code_of(catalog.partner, "nope") == "not_found"
