"""Stream ids are stored and hashed into the log's chain: their text is pinned here, byte for byte."""

from __future__ import annotations

from consent.domain.streams import (
    AUDIT,
    CATALOG_STREAMS,
    CREDENTIAL,
    PARTNER,
    PURPOSE,
    SCOPE,
    SUBJECT_PREFIX,
    TOKEN,
    StreamId,
    parse_stream_id,
    stream_kind,
    stream_of,
    subject_stream,
)


def test_the_stored_text_of_every_kind_of_stream():
    assert subject_stream("zoë") == "subject:zoë" and SUBJECT_PREFIX == "subject:"
    assert [stream_of(kind, "x") for kind in (PURPOSE, SCOPE, PARTNER, CREDENTIAL, TOKEN, AUDIT)] == [
        "purpose:x", "scope:x", "partner:x", "credential:x", "token:x", "audit:x"]
    assert CATALOG_STREAMS == ("purpose", "scope", "partner")


def test_parsing_splits_at_the_first_colon_only():
    assert parse_stream_id("subject:u:1") == StreamId("subject", "u:1")
    assert parse_stream_id("scope:orders.read").id == "orders.read"
    assert stream_kind("partner:acme") == "partner"
    assert parse_stream_id("unresolved:") == ("unresolved", "")
    assert parse_stream_id("nocolon") == ("nocolon", "")


def test_building_and_parsing_are_inverse():
    for kind, ident in (("subject", "a:b:c"), ("audit", "0123abcd4567"), ("token", "")):
        assert parse_stream_id(stream_of(kind, ident)) == (kind, ident)
