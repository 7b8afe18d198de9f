"""Signed consent receipts, the JWKS that verifies them, and the subject's export, over HTTP on both backends."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import msgspec
import pytest
from litestar.testing import AsyncTestClient

import consent.app.subject_records
from consent.adapters.receipt_keys import add_new_key
from consent.api.app import create_app
from tests.conftest import ADMIN, user_headers
from tests.integration.test_decisions_api import partner_headers
from tests.receipt_verifiers import with_pyjwt

PUBLIC_MEMBERS = {"kty", "crv", "x", "kid", "alg", "use"}


async def put_catalog(client) -> None:
    """marketing (consent, sold or shared) and analytics (legitimate interest); `orders` is high
    sensitivity; acme may use both scopes for marketing."""
    for purpose_id, basis in (("marketing", "consent"), ("analytics", "legitimate_interest")):
        answer = await client.put(f"/v1/purposes/{purpose_id}", headers=ADMIN, json={
            "title": purpose_id.title(), "description": "Why", "legal_basis": basis, "retention": "P90D",
            "sale_or_sharing": purpose_id == "marketing"})
        assert answer.status_code == 201, answer.text
    for scope_id, sensitivity in (("profile", "low"), ("orders", "high")):
        answer = await client.put(f"/v1/scopes/{scope_id}", headers=ADMIN, json={
            "title": scope_id, "description": "", "sensitivity": sensitivity})
        assert answer.status_code == 201, answer.text
    answer = await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile", "orders"]}})
    assert answer.status_code == 201, answer.text


async def change(client, subject: str, *changes: dict, headers: dict | None = None, **body) -> dict:
    answer = await client.post(f"/v1/subjects/{subject}/consents", headers=headers or user_headers(subject),
                               json={"changes": list(changes), **body})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def jwk_set(client) -> dict:
    answer = await client.get("/.well-known/jwks.json")  # no credentials
    assert answer.status_code == 200, answer.text
    return answer.json()


def verify(receipt: str, keys: dict) -> dict:
    return with_pyjwt(receipt, keys)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_a_receipt_verifies_with_only_the_published_jwks(client):
    await put_catalog(client)
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    body = await change(client, "u-1", {"purpose": "marketing", "partner": "acme", "scopes": ["orders"],
                                        "action": "grant", "expires_at": expires.isoformat()}, source="app")
    # Every existing field is still there, and one receipt per appended event.
    assert {"subject_id", "version", "position", "consents", "global_opt_out"} <= body.keys()
    history = (await client.get("/v1/subjects/u-1/history", headers=ADMIN)).json()["events"]
    assert [r["event_id"] for r in body["receipts"]] == [e["event_id"] for e in history]

    claims = verify(body["receipts"][0]["receipt"], await jwk_set(client))
    event = history[0]
    assert jwt.get_unverified_header(body["receipts"][0]["receipt"])["alg"] == "Ed25519"
    assert claims["jti"] == event["event_id"]
    assert claims["sub"] == "u-1"
    assert claims["iss"] == "/consent"
    assert claims["iat"] == int(datetime.fromisoformat(event["occurred_at"]).timestamp())
    assert claims["collectionMethod"] == "app"
    assert claims["version"] == "KI-CR-v1.1.0"
    assert "jurisdiction" not in claims
    assert claims["piiControllers"] == [{"piiController": "Platform operator", "onBehalf": False}]
    assert (claims["type"], claims["position"], claims["stream_version"]) == (
        "subject.granted", body["position"], 1)
    assert claims["sensitive"] is True and claims["spiCat"] == ["orders"]
    [purpose] = claims["services"][0]["purposes"]
    assert purpose == {
        "purpose": "Marketing", "purposeId": "marketing", "policyVersion": 1, "legalBasis": "consent",
        "consentType": "explicit", "piiCategory": ["orders"],
        "termination": expires.isoformat().replace("+00:00", "Z"),
        "thirdPartyDisclosure": True, "thirdPartyName": "acme", "saleOrSharing": True}


async def test_jwks_is_public_cacheable_and_never_holds_a_private_part(client):
    answer = await client.get("/.well-known/jwks.json")
    assert answer.status_code == 200
    assert "no-store" not in answer.headers["cache-control"]
    assert "max-age=" in answer.headers["cache-control"]
    keys = answer.json()["keys"]
    assert len(keys) == 1
    assert all(set(key) <= PUBLIC_MEMBERS and "d" not in key for key in keys), keys
    assert (keys[0]["kty"], keys[0]["crv"], keys[0]["alg"]) == ("OKP", "Ed25519", "Ed25519")


async def test_any_altered_claim_fails_verification(client):
    await put_catalog(client)
    body = await change(client, "u-1", {"purpose": "marketing", "scopes": ["profile"], "action": "grant"})
    receipt = body["receipts"][0]["receipt"]
    keys = await jwk_set(client)
    header, payload, signature = receipt.split(".")
    claims = json.loads(unb64(payload))
    assert verify(receipt, keys) == claims
    for name, value in claims.items():
        altered = {**claims, name: _altered(value)}
        forged = f"{header}.{b64(json.dumps(altered).encode())}.{signature}"
        with pytest.raises(jwt.InvalidSignatureError):
            verify(forged, keys)
    # Nor may a claim be dropped, or a signature be borrowed from another receipt.
    dropped = {k: v for k, v in claims.items() if k != "sensitive"}
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{b64(json.dumps(dropped).encode())}.{signature}", keys)
    other = (await change(client, "u-1", {"purpose": "marketing", "action": "withdraw"}))["receipts"][0]["receipt"]
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{header}.{payload}.{other.split('.')[2]}", keys)


def _altered(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return [*value, "x"]
    return {"x": value}


async def test_get_receipt_equals_the_one_returned_even_after_the_catalog_changed(client):
    await put_catalog(client)
    granted = await change(client, "u-1", {"purpose": "marketing", "partner": "acme", "action": "grant"},
                           {"purpose": "analytics", "action": "object"})
    assert len(granted["receipts"]) == 2
    # What the receipts read of the catalog changes afterwards: a new purpose text (a new version),
    # another sensitivity, other data uses. The receipts speak of the moment of consent.
    await client.put("/v1/purposes/marketing", headers=ADMIN, json={
        "title": "Offers", "description": "Other", "legal_basis": "consent", "retention": "P30D",
        "sale_or_sharing": False})
    await client.put("/v1/scopes/orders", headers=ADMIN, json={"title": "o", "description": "", "sensitivity": "low"})
    await client.put("/v1/scopes/profile", headers=ADMIN,
                     json={"title": "p", "description": "", "sensitivity": "high"})
    await client.put("/v1/partners/acme", headers=ADMIN, json={
        "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile"]}})
    for item in granted["receipts"]:
        for headers in (user_headers("u-1"), ADMIN):
            answer = await client.get(f"/v1/subjects/u-1/receipts/{item['event_id']}", headers=headers)
            assert answer.status_code == 200, answer.text
            assert answer.json() == item
    # A grant after the change reads the catalog as it now is.
    later = await change(client, "u-2", {"purpose": "marketing", "partner": "acme", "action": "grant"})
    claims = jwt.decode(later["receipts"][0]["receipt"], options={"verify_signature": False})
    assert (claims["sensitive"], claims["spiCat"]) == (True, ["profile"])
    assert claims["services"][0]["purposes"][0]["purpose"] == "Offers"


async def test_receipt_of_another_subject_or_kind_of_event_is_not_found(client):
    await put_catalog(client)
    mine = (await change(client, "u-1", {"purpose": "marketing", "action": "grant"}))["receipts"][0]
    theirs = (await change(client, "u-2", {"purpose": "marketing", "action": "grant"}))["receipts"][0]
    own = await client.get(f"/v1/subjects/u-1/receipts/{mine['event_id']}", headers=user_headers("u-1"))
    assert own.status_code == 200
    for event_id in (theirs["event_id"], uuid.uuid4()):
        answer = await client.get(f"/v1/subjects/u-1/receipts/{event_id}", headers=ADMIN)
        assert answer.status_code == 404, answer.text
        assert answer.json()["code"] == "not_found"
    malformed = await client.get("/v1/subjects/u-1/receipts/not-a-uuid", headers=ADMIN)
    assert 400 <= malformed.status_code < 500


async def test_only_the_subject_or_an_admin_reads_a_receipt_or_the_export(client):
    await put_catalog(client)
    event_id = (await change(client, "u-1", {"purpose": "marketing", "action": "grant"}))["receipts"][0]["event_id"]
    acme, _ = await partner_headers(client, "acme")
    for path in (f"/v1/subjects/u-1/receipts/{event_id}", "/v1/subjects/u-1/export"):
        for headers in (user_headers("u-2"), acme):
            answer = await client.get(path, headers=headers)
            assert answer.status_code == 403, (path, answer.text)
            assert answer.json()["code"] == "forbidden"
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=user_headers("u-1"))).status_code == 200


async def test_a_change_that_changes_nothing_has_no_receipt(client):
    await put_catalog(client)
    body = await change(client, "u-1", {"purpose": "marketing", "action": "withdraw"})
    assert (body["version"], body["receipts"]) == (0, [])


async def test_an_idempotent_replay_returns_the_same_receipts(client):
    await put_catalog(client)
    headers = {**user_headers("u-1"), "Idempotency-Key": "k-1"}
    grant = {"purpose": "marketing", "action": "grant"}
    first = await change(client, "u-1", grant, headers=headers)
    replay = await change(client, "u-1", grant, headers=headers)
    assert len(first["receipts"]) == 1
    assert replay == first


async def test_a_global_opt_out_has_a_receipt(client):
    await put_catalog(client)
    # Recorded by a read carrying Sec-GPC: no receipt in that answer, but one to fetch.
    read = await client.get("/v1/subjects/u-1/consents", headers={**user_headers("u-1"), "Sec-GPC": "1"})
    assert read.json()["global_opt_out"] is True
    [event] = (await client.get("/v1/subjects/u-1/history", headers=ADMIN)).json()["events"]
    answer = await client.get(f"/v1/subjects/u-1/receipts/{event['event_id']}", headers=user_headers("u-1"))
    assert answer.status_code == 200, answer.text
    claims = verify(answer.json()["receipt"], await jwk_set(client))
    assert (claims["type"], claims["collectionMethod"], claims["services"]) == ("subject.global_opt_out", "gpc", [])
    assert (claims["sensitive"], claims["spiCat"]) == (False, [])


async def test_export_holds_state_whole_history_and_receipts(client, monkeypatch):
    # Small pages, so that the export has to read several of them.
    monkeypatch.setattr(consent.app.subject_records, "PAGE", 2)
    await put_catalog(client)
    await change(client, "u-1", {"purpose": "marketing", "partner": "acme", "action": "grant"})
    await change(client, "u-1", {"purpose": "analytics", "action": "object"})
    await change(client, "u-1", {"purpose": "marketing", "partner": "acme", "scopes": ["orders"],
                                 "action": "withdraw"})
    await change(client, "u-1", {"purpose": "marketing", "action": "grant"})
    await change(client, "u-1", {"purpose": "analytics", "action": "object"},
                 headers={**user_headers("u-1"), "Sec-GPC": "1"})
    await change(client, "u-2", {"purpose": "marketing", "action": "grant"})

    answer = await client.get("/v1/subjects/u-1/export", headers=user_headers("u-1"))
    assert answer.status_code == 200, answer.text
    export = answer.json()
    consents = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()
    history = (await client.get("/v1/subjects/u-1/history?limit=1000", headers=ADMIN)).json()["events"]
    assert export["subject_id"] == "u-1"
    assert abs(datetime.fromisoformat(export["exported_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    assert export["consents"] == consents
    assert len(history) == 6 and export["history"] == history
    assert [r["event_id"] for r in export["receipts"]] == [e["event_id"] for e in history]
    keys = await jwk_set(client)
    for item, event in zip(export["receipts"], history, strict=True):
        claims = verify(item["receipt"], keys)
        assert (claims["jti"], claims["sub"], claims["type"]) == (event["event_id"], "u-1", event["type"])
        single = await client.get(f"/v1/subjects/u-1/receipts/{item['event_id']}", headers=ADMIN)
        assert single.json() == item


async def test_export_of_a_subject_without_events_is_empty(client):
    export = (await client.get("/v1/subjects/u-9/export", headers=ADMIN)).json()
    assert (export["consents"]["version"], export["history"], export["receipts"]) == (0, [], [])


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "receipt-keys.json"
    add_new_key(path)
    return path


async def test_a_key_rotation_keeps_old_receipts_verifiable(settings, key_file):
    settings = msgspec.structs.replace(settings, receipt_keys=str(key_file))
    async with AsyncTestClient(create_app(settings)) as before:
        await put_catalog(before)
        old = (await change(before, "u-1", {"purpose": "marketing", "action": "grant"}))["receipts"][0]
    old_kid = jwt.get_unverified_header(old["receipt"])["kid"]

    new_kid, kept = add_new_key(key_file)  # the new key first, the old one kept
    assert kept == 1 and new_kid != old_kid
    async with AsyncTestClient(create_app(settings)) as after:
        published = (await after.get("/.well-known/jwks.json")).json()["keys"]
        assert [k["kid"] for k in published] == [new_kid, old_kid]
        assert all(set(key) <= PUBLIC_MEMBERS for key in published)
        keys = await jwk_set(after)
        old_claims = verify(old["receipt"], keys)
        new = (await change(after, "u-1", {"purpose": "marketing", "action": "withdraw"}))["receipts"][0]
        assert jwt.get_unverified_header(new["receipt"])["kid"] == new_kid
        assert verify(new["receipt"], keys)["type"] == "subject.withdrawn"
        # Regenerated after the rotation: signed with the new key, the same claims.
        again = (await after.get(f"/v1/subjects/u-1/receipts/{old['event_id']}", headers=ADMIN)).json()
        assert jwt.get_unverified_header(again["receipt"])["kid"] == new_kid
        assert verify(again["receipt"], keys) == old_claims


async def test_settings_name_the_controller_issuer_and_jurisdiction(settings):
    settings = msgspec.structs.replace(
        settings, receipt_issuer="https://consent.example", receipt_jurisdiction="EU",
        controller_name="Example Ltd", controller_contact="privacy@example.com")
    async with AsyncTestClient(create_app(settings)) as client:
        await put_catalog(client)
        item = (await change(client, "u-1", {"purpose": "marketing", "action": "grant"}))["receipts"][0]
        claims = verify(item["receipt"], await jwk_set(client))
    assert (claims["iss"], claims["jurisdiction"]) == ("https://consent.example", "EU")
    assert claims["piiControllers"] == [
        {"piiController": "Example Ltd", "onBehalf": False, "contact": "privacy@example.com"}]
    assert claims["services"][0]["service"] == "Example Ltd"
    # First-party, every scope: the data categories are all scopes, and `orders` makes it sensitive.
    assert claims["services"][0]["purposes"][0]["piiCategory"] is None
    assert (claims["sensitive"], claims["spiCat"]) == (True, ["orders"])
