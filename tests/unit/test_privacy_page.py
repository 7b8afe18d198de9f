"""The privacy center's page model and words, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from consent.api.privacy_center_pages import duration_in_words
from consent.api.privacy_center_strings import ENGLISH, FRENCH, language
from consent.app.privacy_page import changes_from_form, evidence_for, page_blocks
from consent.domain.catalog import Catalog, Partner, Purpose, Scope
from consent.domain.events import ConsentGranted, ObjectionRecorded
from consent.domain.subject import Change, SubjectConsents

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def catalog() -> Catalog:
    c = Catalog()
    c.purposes["ads"] = Purpose(id="ads", title="Ads", description="Offers", legal_basis="consent", retention="P90D",
                                sale_or_sharing=False, version=2, reconsent_below=2)
    c.purposes["stats"] = Purpose(id="stats", title="Stats", description="Usage", legal_basis="legitimate_interest",
                                  retention="P1Y", sale_or_sharing=False, version=1)
    c.purposes["tax"] = Purpose(id="tax", title="Tax", description="Invoices", legal_basis="legal_obligation",
                                retention="P10Y", sale_or_sharing=False, version=1)
    c.purposes["old"] = Purpose(id="old", title="Old", description="", legal_basis="consent", retention="P1D",
                                sale_or_sharing=False, version=1, status="retired")
    c.scopes["email"] = Scope(id="email", title="Email", description="", sensitivity="medium")
    c.partners["acme"] = Partner(id="acme", name="Acme", status="active", data_uses={"ads": ("email",)},
                                   contract_ends_at=None)
    c.partners["gone"] = Partner(id="gone", name="Gone", status="terminated", data_uses={"ads": ("email",)},
                                   contract_ends_at=None)
    return c


def granted(purpose: str, partner: str | None, version: int, expires_at: datetime | None = None) -> ConsentGranted:
    return ConsentGranted(occurred_at=NOW, purpose=purpose, partner=partner, scopes=None, purpose_version=version,
                          source="web", expires_at=expires_at)


def test_each_active_purpose_gets_the_controls_its_legal_basis_allows():
    state = SubjectConsents("ann")
    state.apply(granted("ads", "acme", 2, NOW + timedelta(days=3)))
    state.apply(granted("ads", None, 1))  # before the material change
    blocks = {b.purpose.id: b for b in page_blocks(catalog(), state, NOW)}
    assert set(blocks) == {"ads", "stats", "tax"}  # the retired purpose is gone
    assert [b.control for b in (blocks["ads"], blocks["stats"], blocks["tax"])] == [
        "consent", "objection", "information"]
    first_party, acme = blocks["ads"].switches  # a terminated partner gets no switch
    assert (first_party.state, first_party.checked) == ("reconsent", False)
    assert (acme.state, acme.checked, acme.expires_at) == ("granted", True, NOW + timedelta(days=3))
    assert [(s.title, s.sensitivity) for s in acme.scopes] == [("Email", "medium")]
    assert blocks["tax"].switches == []


def test_the_form_gives_only_the_changes_against_the_current_state():
    state = SubjectConsents("ann")
    state.apply(granted("ads", "acme", 2))
    state.apply(granted("ads", None, 1))
    state.apply(ObjectionRecorded(occurred_at=NOW, purpose="stats", partner=None, scopes=None, purpose_version=1,
                                  source="web"))
    blocks = page_blocks(catalog(), state, NOW)
    shown = {"ads:_", "ads:acme", "stats:_"}
    # Everything left as shown: the stale first-party grant is asked again (checked), nothing else moves.
    assert changes_from_form(blocks, shown, {"ads:_", "ads:acme", "stats:_"}) == [
        Change(purpose="ads", action="grant")]
    # All unchecked: withdraw both grants, lift the objection.
    assert changes_from_form(blocks, shown, set()) == [
        Change(purpose="ads", action="withdraw"), Change(purpose="ads", action="withdraw", partner="acme"),
        Change(purpose="stats", action="grant")]
    # A control that was not on the submitted page changes nothing, whatever is checked.
    assert changes_from_form(blocks, set(), {"ads:acme"}) == []
    assert changes_from_form(blocks, {"tax:_", "nope:_"}, {"tax:_", "nope:_"}) == []


def test_evidence_names_the_collection_point_and_the_text_at_its_version():
    evidence = evidence_for(catalog(), [Change(purpose="ads", action="grant")])
    assert evidence.collection_point == "privacy-center"
    assert evidence.text_shown == "Ads (version 2): Offers"


@pytest.mark.parametrize("header, expected", [
    (None, "en"), ("", "en"), ("fr", "fr"), ("fr-CH, fr;q=0.9, en;q=0.8", "fr"), ("de, en;q=0.5, fr;q=0.7", "fr"),
    ("en-GB,en;q=0.9", "en"), ("es, it", "en"), ("fr;q=bad, en", "en")])
def test_the_language_is_the_first_accepted_one_we_have(header, expected):
    assert language(header)["lang"] == expected


@pytest.mark.parametrize("duration, english, french", [
    ("P90D", "90 days", "90 jours"), ("P1Y6M", "1 year and 6 months", "1 an et 6 mois"),
    ("P1Y2M3D", "1 year, 2 months and 3 days", "1 an, 2 mois et 3 jours"), ("PT1H", "1 hour", "1 heure"),
    ("not a duration", "not a duration", "not a duration")])
def test_retention_in_words(duration, english, french):
    assert duration_in_words(duration, ENGLISH) == english
    assert duration_in_words(duration, FRENCH) == french


def test_both_languages_have_every_string():
    assert set(ENGLISH) == set(FRENCH)
