"""openapi/asyncapi.yaml describes every event the code can emit, exactly as generated from the Structs."""

from pathlib import Path

import yaml

from consent.adapters.asyncapi import render
from consent.adapters.cloudevents import TYPE_PREFIX, is_published
from consent.domain.events import EVENT_TYPES

COMMITTED = Path(__file__).resolve().parents[2] / "openapi" / "asyncapi.yaml"


def test_committed_asyncapi_is_current():
    assert COMMITTED.read_text() == render(), "openapi/asyncapi.yaml is stale: run `make asyncapi`"


def test_every_event_type_has_a_channel_and_message():
    document = yaml.safe_load(COMMITTED.read_text())
    assert document["asyncapi"] == "3.0.0"
    names = {m["name"] for m in document["components"]["messages"].values()}
    assert names == {TYPE_PREFIX + tag for tag in EVENT_TYPES if is_published(tag)}
    assert TYPE_PREFIX + "audit.subject_history_read" not in names  # the audit trail's own, never published
    addresses = {c["address"] for c in document["channels"].values()}
    assert "consent.v1.subject.withdrawn.{purpose}.{partner}" in addresses
    assert "consent.v1.partner.terminated.{id}" in addresses
    granted = document["components"]["schemas"]["ConsentGranted"]["properties"]
    assert {"purpose", "partner", "scopes", "expires_at", "purpose_version", "source", "position",
            "stream_version"} <= set(granted)
    assert "evidence" not in granted  # never published


def test_the_channels_say_how_an_id_is_written_as_one_token():
    document = yaml.safe_load(COMMITTED.read_text())
    scope_id = document["channels"]["scope_defined"]["parameters"]["id"]
    assert "%2E" in scope_id["description"] and "profile%2Eemail" in scope_id["examples"]
    partner = document["channels"]["subject_granted"]["parameters"]["partner"]
    assert "%XX" in partner["description"]
