"""Erasure on NATS (real server, PostgreSQL): subscribers hear `subject.erased`, and never any evidence."""

from __future__ import annotations

import json

from tests.conftest import ADMIN, user_headers
from tests.integration.test_decisions_api import setup_catalog
from tests.integration.test_erasure import CANARIES, EVIDENCE, grant, history
from tests.integration.test_events_nats import events_app, logged_event_ids, stream_messages  # noqa: F401
from tests.integration.test_replicas import MARKETING, replicas  # noqa: F401


async def test_the_erasure_is_published_and_evidence_never_is(events_app, postgresql_url):  # noqa: F811
    client, stream, prefix = events_app
    await setup_catalog(client)
    await grant(client, "u-1", user_headers("u-1"))
    await grant(client, "u-1", user_headers("u-1"), partner=None, evidence={"user_note": CANARIES[0]})
    erased = await client.post("/v1/subjects/u-1/erase", headers=ADMIN)
    assert erased.status_code == 200, erased.text
    await grant(client, "u-1", user_headers("u-1"), evidence={"ip_address": "192.0.2.1"})  # after: a new key
    assert (await history(client, "u-1", user_headers("u-1")))[-1]["data"]["evidence"] == {"ip_address": "192.0.2.1"}

    logged = await logged_event_ids(postgresql_url)
    messages = await stream_messages(stream, prefix, expected=len(logged))
    assert sorted(m.headers["Nats-Msg-Id"] for m in messages) == sorted(logged)
    subject_events = [(m.subject, json.loads(m.data)) for m in messages if ".subject." in m.subject]
    assert [s for s, _ in subject_events] == [
        f"{prefix}.subject.granted.marketing.acme", f"{prefix}.subject.granted.marketing._",
        f"{prefix}.subject.erased._._", f"{prefix}.subject.granted.marketing.acme"]
    _, event = subject_events[2]
    assert event["type"] == "io.consent.v1.subject.erased" and event["subject"] == "u-1"
    assert event["data"]["position"] == erased.json()["position"]
    for message in messages:
        assert not [canary for canary in (*CANARIES, "192.0.2.1", EVIDENCE["text_shown"]) if canary.encode()
                    in message.data], message.subject
        assert "evidence" not in json.loads(message.data)["data"]


async def test_the_other_replica_stops_permitting_once_it_sees_the_erasure(replicas):  # noqa: F811
    a, b = replicas
    await a.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
    await a.put("/v1/purposes/marketing", json=MARKETING)
    written = (await a.post("/v1/subjects/u-9/consents", json={
        "changes": [{"purpose": "marketing", "action": "grant"}]})).json()
    question = {"subject_id": "u-9", "purpose": "marketing", "scopes": ["orders"]}
    # B answers from its cache from now on: only the feed can tell it about the erasure.
    permitted = (await b.post("/v1/decisions", json={**question, "min_position": written["position"]})).json()
    assert permitted["decision"] == "permit", permitted
    erased = (await a.post("/v1/subjects/u-9/erase")).json()
    denied = (await b.post("/v1/decisions", json={**question, "min_position": erased["position"]})).json()
    assert denied["position"] >= erased["position"]
    assert denied["denied"] == [{"scope": "orders", "reason": "no_consent"}]
