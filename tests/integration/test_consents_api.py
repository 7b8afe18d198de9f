"""Consents over HTTP (docs/api.md, "Consents"): commands, reads, history, idempotency, If-Match, GPC."""

from datetime import datetime, timedelta

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from tests.conftest import ADMIN, user_headers

CONSENTS = "/v1/subjects/u-1/consents"
HISTORY = "/v1/subjects/u-1/history"


@pytest.fixture(params=[True, False], ids=["fast", "litestar"])
def settings(settings, request):
    """Every test here runs against both answers to POST .../consents: the thin ASGI layer and Litestar's."""
    return msgspec.structs.replace(settings, fast_writes=request.param)


async def put_catalog(client) -> None:
    """marketing (consent, sold or shared), analytics (legitimate interest), billing (contract),
    tax (legal obligation); scopes profile and orders; partner acme approved for part of marketing."""
    purposes = {"marketing": ("consent", True), "analytics": ("legitimate_interest", False),
                "billing": ("contract", False), "tax": ("legal_obligation", False)}
    for purpose_id, (basis, sold) in purposes.items():
        answer = await client.put(f"/v1/purposes/{purpose_id}", headers=ADMIN, json={
            "title": purpose_id.title(), "description": "Why", "legal_basis": basis, "retention": "P90D",
            "sale_or_sharing": sold})
        assert answer.status_code == 201, answer.text
    for scope_id in ("profile", "orders"):
        answer = await client.put(f"/v1/scopes/{scope_id}", headers=ADMIN, json={
            "title": scope_id.title(), "description": "What", "sensitivity": "low"})
        assert answer.status_code == 201, answer.text
    answer = await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile.email", "orders"]}})
    assert answer.status_code == 201, answer.text


def change(purpose: str = "marketing", action: str = "grant", **fields) -> dict:
    return {"purpose": purpose, "action": action, **fields}


async def post(client, *changes: dict, headers: dict | None = None, **body):
    return await client.post(CONSENTS, headers=headers or ADMIN, json={"changes": list(changes), **body})


async def history(client, subject: str = "u-1") -> list[dict]:
    answer = await client.get(f"/v1/subjects/{subject}/history?limit=1000", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def state_of(answer) -> dict:
    """A change's answer without its receipts: the shape of GET consents."""
    return {k: v for k, v in answer.json().items() if k != "receipts"}


async def assert_untouched(client, subject: str = "u-1") -> None:
    """Nothing was written for a fresh subject."""
    read = (await client.get(f"/v1/subjects/{subject}/consents", headers=ADMIN)).json()
    assert (read["version"], read["position"], read["consents"]) == (0, 0, [])
    assert await history(client, subject) == []


# Reads and grants


async def test_new_subject_reads_empty(client):
    read = await client.get(CONSENTS, headers=ADMIN)
    assert read.status_code == 200
    assert read.json() == {"subject_id": "u-1", "version": 0, "position": 0, "consents": [],
                           "global_opt_out": False}


async def test_grant_answers_and_reads_in_the_documented_shape(client):
    await put_catalog(client)
    answer = await post(client, change(scopes=["profile"]), change(partner="acme", scopes=["orders"]),
                        source="web", evidence={"collection_point": "signup", "text_shown": "Offers?"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert set(body) == {"subject_id", "version", "position", "consents", "global_opt_out", "receipts"}
    assert (body["subject_id"], body["version"], body["global_opt_out"]) == ("u-1", 2, False)
    assert len(body.pop("receipts")) == 2  # one per event (tests/integration/test_receipts.py)
    assert body["position"] == 9  # 7 catalog events, then the subject's 2
    for consent in body["consents"]:
        assert set(consent) == {"purpose", "partner", "scopes", "status", "expires_at", "purpose_version",
                                "updated_at"}
        assert datetime.fromisoformat(consent.pop("updated_at")).tzinfo is not None
    # First-party (partner null) sorts before the partners.
    assert body["consents"] == [
        {"purpose": "marketing", "partner": None, "scopes": ["profile"], "status": "granted",
         "expires_at": None, "purpose_version": 1},
        {"purpose": "marketing", "partner": "acme", "scopes": ["orders"], "status": "granted",
         "expires_at": None, "purpose_version": 1},
    ]
    assert (await client.get(CONSENTS, headers=ADMIN)).json() == state_of(answer)


async def test_first_party_grant_with_null_scopes_covers_every_scope(client):
    await put_catalog(client)
    answer = await post(client, change(partner=None, scopes=None))
    assert answer.json()["consents"][0] | {"updated_at": None} == {
        "purpose": "marketing", "partner": None, "scopes": None, "status": "granted", "expires_at": None,
        "purpose_version": 1, "updated_at": None}


async def test_null_scopes_to_a_partner_stores_its_approved_scopes(client):
    await put_catalog(client)
    answer = await post(client, change(partner="acme"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["consents"][0]["scopes"] == ["orders", "profile.email"]
    # Widening the partner's data uses later does not widen the grant.
    await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
    read = (await client.get(CONSENTS, headers=ADMIN)).json()
    assert read["consents"][0]["scopes"] == ["orders", "profile.email"]
    assert (await history(client))[0]["data"]["scopes"] == ["orders", "profile.email"]


@pytest.mark.parametrize("scopes", [["profile.phone"], ["profile"], ["orders", "profile.phone"]])
async def test_grant_outside_approved_data_uses_writes_nothing(client, scopes):
    await put_catalog(client)
    refused = await post(client, change(partner="acme", scopes=scopes))
    assert refused.status_code == 422
    assert refused.json()["code"] == "scope_not_approved"
    await assert_untouched(client)


async def test_grant_to_a_partner_with_no_data_use_for_the_purpose_is_refused(client):
    await put_catalog(client)
    refused = await post(client, change("analytics", partner="acme"))
    assert (refused.status_code, refused.json()["code"]) == (422, "scope_not_approved")
    await assert_untouched(client)


async def test_withdraw_whole_and_in_part(client):
    await put_catalog(client)
    await post(client, change(partner="acme"), change(scopes=["profile", "orders"]))
    partly = await post(client, change(action="withdraw", scopes=["orders"]))
    assert partly.status_code == 200, partly.text
    first_party = [c for c in partly.json()["consents"] if c["partner"] is None][0]
    assert (first_party["status"], first_party["scopes"]) == ("granted", ["profile"])
    whole = await post(client, change(action="withdraw", partner="acme"))
    by_partner = {c["partner"]: c for c in whole.json()["consents"]}
    assert by_partner["acme"]["status"] == "withdrawn"
    assert by_partner[None]["status"] == "granted"
    assert [e["type"] for e in await history(client)] == [
        "subject.granted", "subject.granted", "subject.withdrawn", "subject.withdrawn"]
    # Withdrawing what is not granted is already true: no event.
    again = await post(client, change(action="withdraw", partner="acme"))
    assert again.json()["version"] == whole.json()["version"] == 4


async def test_objection_to_legitimate_interest(client):
    await put_catalog(client)
    answer = await post(client, change("analytics", "object"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["consents"][0]["status"] == "objected"
    assert [e["type"] for e in await history(client)] == ["subject.objected"]


@pytest.mark.parametrize("purpose", ["billing", "tax"])
@pytest.mark.parametrize("action", ["grant", "withdraw", "object"])
async def test_consent_commands_on_non_consent_bases_are_refused(client, purpose, action):
    await put_catalog(client)
    refused = await post(client, change(purpose, action))
    assert refused.status_code == 422
    assert refused.json()["code"] == "not_consent_based"
    await assert_untouched(client)


@pytest.mark.parametrize(("last", "code"), [
    (change("billing"), "not_consent_based"),
    (change("nope"), "unknown_purpose"),
    (change(partner="nope"), "unknown_partner"),
    (change(scopes=["nope"]), "unknown_scope"),
    (change(partner="acme", scopes=["profile"]), "scope_not_approved"),
])
async def test_request_with_one_bad_change_writes_none(client, last, code):
    await put_catalog(client)
    await post(client, change("analytics", "object"))
    refused = await post(client, change(), change(partner="acme"), change("analytics", "withdraw"), last)
    assert refused.status_code == 422
    assert refused.json()["code"] == code
    read = (await client.get(CONSENTS, headers=ADMIN)).json()
    assert read["version"] == 1
    assert [(c["purpose"], c["status"]) for c in read["consents"]] == [("analytics", "objected")]
    assert len(await history(client)) == 1


# Idempotency-Key


async def test_same_idempotency_key_and_body_replays_the_first_answer(client):
    await put_catalog(client)
    key = {**ADMIN, "Idempotency-Key": "req-1"}
    first = await post(client, change(), headers=key)
    assert first.status_code == 200, first.text
    replay = await post(client, change(), headers=key)
    assert replay.status_code == 200
    assert replay.json() == first.json()
    assert len(await history(client)) == 1
    # Without the key the same body is a new command: granting again is recorded.
    fresh = await post(client, change(), headers={**ADMIN, "Idempotency-Key": "req-2"})
    assert fresh.json()["version"] == 2
    assert fresh.json()["position"] > first.json()["position"]


async def test_same_idempotency_key_with_another_body_is_409(client):
    await put_catalog(client)
    key = {**ADMIN, "Idempotency-Key": "req-1"}
    first = await post(client, change(), headers=key)
    reused = await post(client, change(action="withdraw"), headers=key)
    assert reused.status_code == 409
    assert reused.headers["content-type"].startswith("application/problem+json")
    assert reused.json()["code"] == "idempotency_key_reused"
    assert (await client.get(CONSENTS, headers=ADMIN)).json() == state_of(first)
    assert len(await history(client)) == 1


async def test_idempotency_keys_are_per_subject(client):
    await put_catalog(client)
    key = {**ADMIN, "Idempotency-Key": "req-1"}
    await post(client, change(), headers=key)
    other = await client.post("/v1/subjects/u-2/consents", headers=key, json={"changes": [change()]})
    assert (other.status_code, other.json()["subject_id"], other.json()["version"]) == (200, "u-2", 1)


# If-Match


async def test_if_match_current_version_succeeds_and_stale_is_409(client):
    await put_catalog(client)
    first = await post(client, change(), headers={**ADMIN, "If-Match": '"0"'})
    assert (first.status_code, first.json()["version"]) == (200, 1)
    stale = await post(client, change("analytics", "object"), headers={**ADMIN, "If-Match": '"0"'})
    assert stale.status_code == 409
    assert stale.json()["code"] == "version_conflict"
    read = (await client.get(CONSENTS, headers=ADMIN)).json()
    assert read == state_of(first)
    assert len(await history(client)) == 1
    second = await post(client, change("analytics", "object"), headers={**ADMIN, "If-Match": 'W/"1"'})
    assert (second.status_code, second.json()["version"]) == (200, 2)


@pytest.mark.parametrize("if_match", ["abc", '"-1"', '"1', '1"', '"12345678901"', '"1", "2"'])
async def test_malformed_if_match_is_400(client, if_match):
    await put_catalog(client)
    refused = await post(client, change(), headers={**ADMIN, "If-Match": if_match})
    assert refused.status_code == 400
    assert refused.json()["code"] == "validation_failed"
    await assert_untouched(client)


# History


async def test_history_is_oldest_first_and_pages(client):
    await put_catalog(client)
    await post(client, change())
    await post(client, change("analytics", "object"))
    await post(client, change(action="withdraw"))
    await client.post("/v1/subjects/u-2/consents", headers=ADMIN, json={"changes": [change()]})

    whole = await client.get(HISTORY, headers=ADMIN)
    assert whole.status_code == 200
    body = whole.json()
    assert (body["subject_id"], body["next_after"]) == ("u-1", None)
    events = body["events"]
    assert [e["type"] for e in events] == ["subject.granted", "subject.objected", "subject.withdrawn"]
    assert [e["stream_version"] for e in events] == [1, 2, 3]
    positions = [e["position"] for e in events]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert set(events[0]) == {"event_id", "type", "stream_version", "position", "occurred_at", "data"}
    assert events[0]["data"]["purpose"] == "marketing" and events[0]["data"]["source"] == "api"
    assert "occurred_at" not in events[0]["data"]

    page = (await client.get(f"{HISTORY}?limit=2", headers=ADMIN)).json()
    assert page["events"] == events[:2]
    assert page["next_after"] == positions[1]
    rest = (await client.get(f"{HISTORY}?limit=2&after={page['next_after']}", headers=ADMIN)).json()
    assert (rest["events"], rest["next_after"]) == (events[2:], None)
    assert (await client.get(f"{HISTORY}?after={positions[-1]}", headers=ADMIN)).json()["events"] == []


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=x", "after=-1"])
async def test_history_refuses_bad_paging(client, query):
    refused = await client.get(f"{HISTORY}?{query}", headers=ADMIN)
    assert refused.status_code == 400
    assert refused.json()["code"] == "validation_failed"


async def test_history_accepts_limit_1000(client):
    assert (await client.get(f"{HISTORY}?limit=1000", headers=ADMIN)).status_code == 200


# Global Privacy Control


async def test_sec_gpc_from_the_end_user_records_global_opt_out_once(client):
    await put_catalog(client)
    user = {**user_headers("u-1"), "Sec-GPC": "1"}
    first = await post(client, change(), headers=user)
    assert first.status_code == 200, first.text
    assert (first.json()["global_opt_out"], first.json()["version"]) == (True, 2)
    again = await post(client, change("analytics", "object"), headers=user)
    read = await client.get(CONSENTS, headers=user)
    assert read.json()["global_opt_out"] is True
    assert [e["type"] for e in await history(client)] == [
        "subject.granted", "subject.global_opt_out", "subject.objected"]
    assert again.json()["version"] == read.json()["version"] == 3


async def test_sec_gpc_on_a_read_by_the_end_user_records_it(client):
    read = await client.get(CONSENTS, headers={**user_headers("u-1"), "Sec-GPC": "1"})
    assert read.status_code == 200
    assert (read.json()["global_opt_out"], read.json()["version"]) == (True, 1)
    assert [(e["type"], e["data"]["source"]) for e in await history(client)] == [("subject.global_opt_out", "gpc")]


async def test_sec_gpc_from_an_admin_is_not_the_users_signal(client):
    await put_catalog(client)
    answer = await post(client, change(), headers={**ADMIN, "Sec-GPC": "1"})
    read = await client.get(CONSENTS, headers={**ADMIN, "Sec-GPC": "1"})
    assert answer.json()["global_opt_out"] is read.json()["global_opt_out"] is False
    assert [e["type"] for e in await history(client)] == ["subject.granted"]


async def test_sec_gpc_other_than_1_is_ignored(client):
    read = await client.get(CONSENTS, headers={**user_headers("u-1"), "Sec-GPC": "0"})
    assert read.json()["global_opt_out"] is False
    assert await history(client) == []


# Expiry


async def test_expires_at_round_trips_in_utc(client):
    await put_catalog(client)
    answer = await post(client, change(expires_at="2999-01-01T00:00:00Z"),
                        change("analytics", expires_at="2999-01-01T02:00:00+02:00"))
    assert answer.status_code == 200, answer.text
    read = (await client.get(CONSENTS, headers=ADMIN)).json()
    expiries = {c["purpose"]: (c["status"], c["expires_at"]) for c in read["consents"]}
    # An offset is normalised: the write's answer and later reads agree, on both backends.
    assert expiries == {"marketing": ("granted", "2999-01-01T00:00:00Z"),
                        "analytics": ("granted", "2999-01-01T00:00:00Z")}
    assert state_of(answer) == read


@pytest.mark.parametrize("expires_at", ["2000-01-01T00:00:00Z", "2000-01-01T00:00:00"])
async def test_past_or_naive_expiry_is_refused(client, expires_at):
    await put_catalog(client)
    refused = await post(client, change(expires_at=expires_at))
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_failed")
    await assert_untouched(client)


async def test_expiry_on_a_withdrawal_is_refused(client):
    await put_catalog(client)
    await post(client, change())
    refused = await post(client, change(action="withdraw", expires_at="2999-01-01T00:00:00Z"))
    assert (refused.status_code, refused.json()["code"]) == (422, "validation_failed")
    assert len(await history(client)) == 1


async def test_grant_shows_expired_once_its_time_has_passed(settings, clock):
    async with AsyncTestClient(create_app(settings, clock)) as client:
        await put_catalog(client)
        expires_at = clock.now() + timedelta(days=1)
        answer = await post(client, change(expires_at=expires_at.isoformat()))
        assert answer.json()["consents"][0]["status"] == "granted"
        clock.advance(days=1, seconds=-1)
        assert (await client.get(CONSENTS, headers=ADMIN)).json()["consents"][0]["status"] == "granted"
        clock.advance(seconds=1)
        read = (await client.get(CONSENTS, headers=ADMIN)).json()["consents"][0]
        assert (read["status"], datetime.fromisoformat(read["expires_at"])) == ("expired", expires_at)
        # A new grant supersedes the expired one.
        regranted = await post(client, change())
        assert regranted.json()["consents"][0] | {"updated_at": None} == {
            "purpose": "marketing", "partner": None, "scopes": None, "status": "granted", "expires_at": None,
            "purpose_version": 1, "updated_at": None}
        assert datetime.fromisoformat(regranted.json()["consents"][0]["updated_at"]) == clock.now()
