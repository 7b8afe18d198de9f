"""Events about a pairwise partner leave with its pseudonym, never the subject id; replicas still follow them."""

from __future__ import annotations

import json

import pytest
from cloudevents.http import from_json
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from consent.domain.pseudonyms import pseudonym
from tests.conftest import ADMIN, ADMIN_KEY, NATS_URL, SHARED_KEYS, USER_TOKEN_SECRET, empty_tables
from tests.integration.test_events_faults import wait_until
from tests.integration.test_events_nats import stream_messages

KEY = "test-pseudonym-key-0123456789abcdef"
CANARY = "canary-subject-5e1d0c"
MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


@pytest.fixture
async def pairwise_settings(postgresql_url, nats_names) -> Settings:
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    return Settings(database_url=postgresql_url, nats_url=NATS_URL, admin_keys=(ADMIN_KEY,),
                    user_token_secret=USER_TOKEN_SECRET, nats_stream=stream, nats_subject_prefix=prefix,
                    **{**SHARED_KEYS, "pseudonym_key": KEY})


async def setup(client) -> None:
    await client.put("/v1/scopes/orders", headers=ADMIN, json={"title": "O", "description": "", "sensitivity": "low"})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    answer = await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["orders"]}, "identifiers": "pairwise"})
    assert answer.status_code == 201, answer.text


async def change(client, subject_id: str, partner: str | None, action: str) -> dict:
    answer = await client.post(f"/v1/subjects/{subject_id}/consents", headers=ADMIN, json={
        "changes": [{"purpose": "marketing", "partner": partner, "action": action}]})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_the_pairwise_partners_events_carry_its_pseudonym_and_first_party_ones_the_subject(
        pairwise_settings):
    async with AsyncTestClient(create_app(pairwise_settings)) as client:
        await setup(client)
        await change(client, CANARY, "acme", "grant")
        await change(client, CANARY, "acme", "withdraw")
        await change(client, "first-party-subject", None, "grant")
        messages = await stream_messages(pairwise_settings.nats_stream, pairwise_settings.nats_subject_prefix, 6)

    prefix = pairwise_settings.nats_subject_prefix
    assert [m.subject for m in messages][3:] == [
        f"{prefix}.subject.granted.marketing.acme", f"{prefix}.subject.withdrawn.marketing.acme",
        f"{prefix}.subject.granted.marketing._"]
    expected = pseudonym(KEY.encode(), "acme", CANARY)
    for message in messages[3:5]:
        event = json.loads(message.data)
        assert event["subject"] == expected and event["pseudonymous"] is True
        assert from_json(message.data)["pseudonymous"] is True  # a valid CloudEvents extension attribute
    assert not any(CANARY.encode() in m.data for m in messages)
    first_party = json.loads(messages[5].data)
    assert first_party["subject"] == "first-party-subject" and "pseudonymous" not in first_party


async def test_another_replica_applies_a_pairwise_event_to_the_subject_it_stands_for(pairwise_settings):
    async with AsyncTestClient(create_app(pairwise_settings)) as a, \
            AsyncTestClient(create_app(pairwise_settings)) as b:
        await setup(a)
        await change(a, CANARY, "acme", "grant")
        question = {"subject_id": CANARY, "purpose": "marketing", "scopes": ["orders"], "partner": "acme"}

        async def b_answers(decision: str) -> bool:
            return (await b.post("/v1/decisions", headers=ADMIN, json=question)).json()["decision"] == decision

        await wait_until(lambda: b_answers("permit"), timeout=5, what="replica B to see the grant")
        # B holds the subject in its cache now, and has never seen the pseudonym; A withdraws.
        await change(a, CANARY, "acme", "withdraw")
        await wait_until(lambda: b_answers("deny"), timeout=5, what="replica B to see the withdrawal")
