"""Pairwise pseudonyms: the function, which events need one, and the decision cache's mapping."""

import asyncio
import re
import uuid
from datetime import UTC, datetime

import pytest

from consent.app.ports import RecordedEvent
from consent.app.read_model import SubjectCache
from consent.domain.catalog import Catalog, PartnerSpec, register_partner
from consent.domain.errors import DomainError
from consent.domain.events import ConsentGranted, GlobalOptOutRecorded, PartnerRegistered, event_from_data
from consent.domain.pseudonyms import pseudonym, pseudonyms_for_events
from consent.domain.subject import SubjectConsents

KEY = b"k" * 32
NOW = datetime(2026, 3, 3, tzinfo=UTC)


def test_a_pseudonym_is_stable_and_shaped_like_a_subject_id():
    first = pseudonym(KEY, "acme", "user-42")
    assert first == pseudonym(KEY, "acme", "user-42")
    assert re.fullmatch(r"pw_[A-Za-z0-9_-]{43}", first), first
    assert len(first) <= 128 and "user-42" not in first


def test_pseudonyms_differ_across_partners_subjects_and_keys():
    base = pseudonym(KEY, "acme", "user-42")
    assert base != pseudonym(KEY, "globex", "user-42")
    assert base != pseudonym(KEY, "acme", "user-43")
    assert base != pseudonym(b"j" * 32, "acme", "user-42")
    # The separator keeps (partner, subject) pairs apart that concatenate alike.
    assert pseudonym(KEY, "ab", "c") != pseudonym(KEY, "a", "bc")


def _catalog(identifiers: str) -> Catalog:
    catalog = Catalog()
    catalog.apply(PartnerRegistered(occurred_at=NOW, partner_id="acme", name="Acme", status="active",
                                    data_uses={}, contract_ends_at=None, identifiers=identifiers))
    return catalog


def _granted(partner: str | None) -> ConsentGranted:
    return ConsentGranted(occurred_at=NOW, purpose="marketing", partner=partner, scopes=None, purpose_version=1,
                          source="web")


def test_only_events_about_a_pairwise_partner_get_a_pseudonym():
    events = [_granted("acme"), _granted(None), GlobalOptOutRecorded(occurred_at=NOW, source="gpc")]
    assert pseudonyms_for_events(KEY, _catalog("pairwise"), "u-1", events) == {
        "acme": pseudonym(KEY, "acme", "u-1")}
    assert pseudonyms_for_events(KEY, _catalog("public"), "u-1", events) == {}


def test_a_write_about_a_pairwise_partner_is_refused_without_the_key():
    with pytest.raises(DomainError) as refused:
        pseudonyms_for_events(None, _catalog("pairwise"), "u-1", [_granted("acme")])
    assert refused.value.code == "pseudonym_key_missing"
    assert pseudonyms_for_events(None, _catalog("public"), "u-1", [_granted("acme")]) == {}


def test_an_update_leaving_identifiers_out_keeps_the_mode():
    catalog = _catalog("pairwise")
    current = catalog.partners["acme"]
    assert register_partner(current, "acme", PartnerSpec(name="Acme", status="active", data_uses={}),
                            catalog, NOW) == []
    [back] = register_partner(current, "acme", PartnerSpec(name="Acme", status="active", data_uses={},
                                                            identifiers="public"), catalog, NOW)
    assert back.identifiers == "public"


def test_partner_events_written_before_pseudonyms_decode_as_public():
    old = event_from_data("partner.registered", {
        "occurred_at": "2026-01-01T00:00:00Z", "partner_id": "acme", "name": "Acme", "status": "active",
        "data_uses": {}, "contract_ends_at": None})
    assert old.identifiers == "public"


class Reader:
    """Subjects by id, and a mapping of acme's pseudonyms; counts the reads."""

    def __init__(self) -> None:
        self.mapping = {"pw_a": "s-1"}
        self.reads: list[tuple[str, list[str]]] = []

    async def load_subjects(self, subject_ids):
        self.reads.append(("subjects", sorted(subject_ids)))
        return {s: SubjectConsents(s, version=1) for s in subject_ids}

    async def load_pseudonymous(self, partner_id, pseudonyms):
        self.reads.append(("pseudonyms", sorted(pseudonyms)))
        return {p: SubjectConsents(self.mapping[p], version=1) for p in pseudonyms
                if partner_id == "acme" and p in self.mapping}

    async def head_position(self):
        return 0


def test_a_mapping_is_read_with_its_state_once_and_a_miss_is_not_remembered():
    async def scenario():
        reader = Reader()
        cache = SubjectCache(reader, capacity=10, pseudonyms=reader)
        found = await cache.get_pseudonymous("acme", ["pw_a", "pw_unknown"])
        assert found["pw_a"].subject_id == "s-1" and found["pw_unknown"] is None
        assert reader.reads == [("pseudonyms", ["pw_a", "pw_unknown"])]
        assert (await cache.get_pseudonymous("acme", ["pw_a"]))["pw_a"].subject_id == "s-1"
        assert (await cache.get("s-1")).subject_id == "s-1"
        assert len(reader.reads) == 1  # the state was cached too: no read for it
        reader.mapping["pw_unknown"] = "s-2"  # issued since
        assert (await cache.get_pseudonymous("acme", ["pw_unknown"]))["pw_unknown"].subject_id == "s-2"
        assert (await cache.get_pseudonymous("globex", ["pw_a"]))["pw_a"] is None  # another partner's

    asyncio.run(scenario())


def test_the_feed_folds_a_pseudonymous_event_into_the_subject_it_stands_for():
    async def scenario():
        reader = Reader()
        cache = SubjectCache(reader, capacity=10, pseudonyms=reader)
        await cache.get("s-1")  # cached at version 1, its mapping not known yet
        granted = _granted("acme")
        published = RecordedEvent(uuid.uuid4(), "subject:pw_a", 2, 5, granted, NOW, pseudonym="pw_a")
        await cache.apply_from_feed([published])
        state = await cache.get("s-1")
        assert (state.version, state.position) == (2, 5)
        assert state.records[("marketing", "acme")].status == "granted"
        assert cache.subject_of("acme", "pw_a") == "s-1"
        # A pseudonym nobody recorded: whatever subject changed must not be answered stale.
        stray = RecordedEvent(uuid.uuid4(), "subject:pw_x", 1, 6, granted, NOW, pseudonym="pw_x")
        await cache.apply_from_feed([stray])
        assert len(cache) == 0 and cache.position == 6

    asyncio.run(scenario())
