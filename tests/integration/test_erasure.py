"""Crypto-shredding over HTTP, on both backends: evidence stored encrypted, erased for good, keys rotated."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from datetime import UTC, datetime

import msgspec
import pytest
import sqlalchemy as sa
from consent_client.webhooks import WebhookVerificationError, WebhookVerifier
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.cipher import MasterKeys
from consent.adapters.database import Database
from consent.adapters.key_rotation import rewrap_all
from consent.adapters.log_verify import verify_log
from consent.adapters.sql_unit_of_work import SqlUnitOfWork
from consent.adapters.subject_keys import SubjectKeys
from consent.adapters.tables import consents, events, subject_keys, webhooks
from consent.api.app import create_app
from consent.config import Settings
from consent.domain.errors import VersionConflict
from consent.domain.events import ConsentGranted, Evidence
from consent.domain.key_encoding import decode_master_key
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    MASTER_KEY,
    SHARED_KEYS,
    USER_TOKEN_SECRET,
    empty_tables,
    tail,
    user_headers,
)
from tests.integration.test_decisions_api import partner_headers, setup_catalog
from tests.integration.webhook_receiver import Receiver, eventually

CANARY_EMAIL = "canary.erasure@example.com"
CANARY_IP = "198.51.100.77"
CANARIES = (CANARY_EMAIL, CANARY_IP, "CanaryBrowser")
EVIDENCE = {"collection_point": "signup", "text_shown": "Offers by email?", "user_note": f"mail {CANARY_EMAIL}",
            "ip_address": CANARY_IP, "user_agent": "CanaryBrowser/1.0"}


async def grant(client, subject_id: str, headers=ADMIN, evidence: dict | None = EVIDENCE, partner: str | None = "acme",
                action: str = "grant") -> dict:
    body = {"changes": [{"purpose": "marketing", "partner": partner, "action": action}], "source": "web"}
    if evidence is not None:
        body["evidence"] = evidence
    answer = await client.post(f"/v1/subjects/{subject_id}/consents", headers=headers, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()


async def history(client, subject_id: str, headers=ADMIN) -> list[dict]:
    answer = await client.get(f"/v1/subjects/{subject_id}/history?limit=1000", headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


async def query(url: str, statement) -> list:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(statement)).all())
    finally:
        await engine.dispose()


async def stored_text(url: str) -> str:
    """Every event's data and every data key row, as the database holds them."""
    rows = await query(url, sa.select(sa.cast(events.c.data, sa.Text)))
    keys = await query(url, sa.select(subject_keys))
    return "\n".join(r[0] for r in rows) + repr(keys)


async def key_ids(url: str, subject_id: str) -> list[str]:
    return [r.key_id for r in await query(url, sa.select(subject_keys.c.key_id)
                                          .where(subject_keys.c.subject_id == subject_id))]


async def test_evidence_is_stored_encrypted_and_read_back_by_the_subject(client, database_url):
    await setup_catalog(client)
    await grant(client, "u-1", user_headers("u-1"))
    stored = await stored_text(database_url)
    assert not [canary for canary in CANARIES if canary in stored]
    (data,) = [r[0] for r in await query(database_url, sa.select(events.c.data)
                                         .where(events.c.stream_id == "subject:u-1"))]
    assert set(data["evidence"]) == {"enc", "kid", "nonce", "ct"}
    assert data["purpose"] == "marketing" and data["partner"] == "acme"  # only personal fields are sealed
    (event,) = await history(client, "u-1", user_headers("u-1"))
    assert event["data"]["evidence"] == EVIDENCE
    assert len(await key_ids(database_url, "u-1")) == 1


async def test_erasure_shreds_personal_data_and_keeps_the_facts(client, database_url):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "u-1")  # by an admin: shown in the audit too
    await grant(client, "u-1", user_headers("u-1"), partner=None, evidence={"ip_address": CANARY_IP})
    written = await grant(client, "u-1", user_headers("u-1"), evidence=None, partner="globex")
    question = {"subject_id": "u-1", "purpose": "marketing", "scopes": ["orders"], "min_position": written["position"]}
    assert (await client.post("/v1/decisions", headers=acme, json=question)).json()["decision"] == "permit"
    before = await history(client, "u-1", user_headers("u-1"))
    assert [e["data"]["evidence"] for e in before] == [EVIDENCE, {"ip_address": CANARY_IP}, None]
    rows_before = await query(database_url, sa.select(events).order_by(events.c.position))

    answer = await client.post("/v1/subjects/u-1/erase", headers=user_headers("u-1"))
    assert answer.status_code == 200, answer.text
    erased = answer.json()
    assert set(erased) == {"subject_id", "erased_at", "position"} and erased["subject_id"] == "u-1"
    assert abs((datetime.fromisoformat(erased["erased_at"]) - datetime.now(UTC)).total_seconds()) < 60

    after = await history(client, "u-1", user_headers("u-1"))
    assert [e["type"] for e in after] == [e["type"] for e in before] + ["subject.erased"]
    assert after[-1]["position"] == erased["position"] and after[-1]["data"] == {}
    for old, new in zip(before, after, strict=False):
        assert {k: v for k, v in new.items() if k != "data"} == {k: v for k, v in old.items() if k != "data"}
        expected = "[erased]" if old["data"]["evidence"] is not None else None
        assert new["data"] == {**old["data"], "evidence": expected}
    # The log's rows are as they were, so the hash chain still holds; only the key and read models went.
    assert await query(database_url, sa.select(events).order_by(events.c.position)
                       .where(events.c.position < erased["position"])) == rows_before
    database = Database(database_url)
    try:
        assert (await verify_log(database)).intact
    finally:
        await database.dispose()
    assert await key_ids(database_url, "u-1") == []
    assert await query(database_url, sa.select(consents).where(consents.c.subject_id == "u-1")) == []
    read = (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()
    assert read["consents"] == [] and read["position"] == erased["position"]
    denied = (await client.post("/v1/decisions", headers=acme,
                                json={**question, "min_position": erased["position"]})).json()
    assert denied["decision"] == "deny" and denied["denied"] == [{"scope": "orders", "reason": "no_consent"}]
    audit = (await client.get("/v1/audit", headers=ADMIN)).json()["events"]
    assert [e["data"]["evidence"] for e in audit if e["stream_id"] == "subject:u-1"] == ["[erased]"]
    export = await client.get("/v1/subjects/u-1/export", headers=user_headers("u-1"))
    assert export.status_code == 200, export.text
    assert not [canary for canary in CANARIES if canary in export.text]
    assert [e["data"].get("evidence") for e in export.json()["history"]][:2] == ["[erased]", "[erased]"]

    # Again: the same answer, no second event.
    again = await client.post("/v1/subjects/u-1/erase", headers=ADMIN)
    assert again.status_code == 200 and again.json() == erased
    assert len(await history(client, "u-1")) == len(after)


async def test_a_grant_after_erasure_gets_a_new_key_and_old_evidence_stays_erased(client, database_url):
    await setup_catalog(client)
    await grant(client, "u-1")
    (old_key,) = await key_ids(database_url, "u-1")
    assert (await client.post("/v1/subjects/u-1/erase", headers=ADMIN)).status_code == 200
    later = {"collection_point": "settings", "user_note": "granted again"}
    await grant(client, "u-1", user_headers("u-1"), evidence=later)
    (new_key,) = await key_ids(database_url, "u-1")
    assert new_key != old_key
    assert [e["data"].get("evidence") for e in await history(client, "u-1")] == ["[erased]", None, later]
    assert [c["status"] for c in (await client.get("/v1/subjects/u-1/consents", headers=ADMIN)).json()["consents"]
            ] == ["granted"]


async def test_an_unknown_subject_can_be_erased_and_subscribers_hear_of_it(client):
    answer = await client.post("/v1/subjects/never-seen/erase", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    assert [e["type"] for e in await history(client, "never-seen")] == ["subject.erased"]


async def test_only_the_subject_itself_or_an_admin_may_erase(client, database_url):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, "u-1")
    for headers, status in ((user_headers("u-2"), 403), (acme, 403), ({}, 401),
                            (user_headers("u-1", secret="not-the-secret-0123456789abcdef0123"), 401)):
        answer = await client.post("/v1/subjects/u-1/erase", headers=headers)
        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert [e["type"] for e in await history(client, "u-1")] == ["subject.granted"]
    assert len(await key_ids(database_url, "u-1")) == 1
    assert (await client.post("/v1/subjects/" + "u" * 129 + "/erase", headers=ADMIN)).status_code == 422


def key_text(seed: int) -> str:
    return base64.b64encode(bytes([seed]) * 32).decode()


def run_rewrap(url: str, current: str, old: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "CONSENT_DATABASE_URL": url, "CONSENT_MASTER_KEY": current, "CONSENT_MASTER_KEYS_OLD": old}
    return subprocess.run([sys.executable, "-m", "consent.cli", "keys", "rewrap", "--batch", "2"], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def receiver():
    started = Receiver().start()
    yield started
    started.stop()


async def rewrap(url: str, master: MasterKeys) -> tuple[int, int, int, int]:
    database = Database(url)
    try:
        report = await rewrap_all(database, master, batch=2)
    finally:
        await database.dispose()
    return report.rewrapped, report.resealed, report.unreadable, report.remaining


async def signers_of_withdrawal(client, receiver: Receiver, subject_id: str, secrets: dict[str, str]) -> set:
    """A withdrawal reaches both webhooks; for each request, the names of the secrets it verifies with."""
    event_id = (await grant(client, subject_id, evidence=None, action="withdraw"))["receipts"][0]["event_id"]

    def requests() -> list:
        return [r for r in receiver.ok() if r.headers["webhook-id"] == event_id]
    await eventually(lambda: len(requests()) == 2, what="the withdrawal at both webhooks")
    signers = set()
    for request in requests():
        verified = set()
        for name, secret in secrets.items():
            try:
                WebhookVerifier(secret).verify(request.body, request.headers)
                verified.add(name)
            except WebhookVerificationError:
                pass
        signers.add(frozenset(verified))
    return signers


async def test_rotation_rewraps_every_key_and_history_reads_under_the_new_key_only(settings, database_url, receiver):
    first, second, third = key_text(7), key_text(8), key_text(9)

    def app(current: str, *old: str):
        return AsyncTestClient(create_app(msgspec.structs.replace(
            settings, master_key=current, master_keys_old=old, webhook_allow_http=True,
            webhook_allowed_hosts=(receiver.allowed,))))

    async with app(first) as client:
        await setup_catalog(client)
        # Two webhooks sealed by the first key: one as registered, one rotated (its previous secret still signs).
        secrets = {}
        for name in ("plain", "rotated"):
            answer = await client.post("/v1/partners/acme/webhooks", headers=ADMIN, json={"url": receiver.url})
            assert answer.status_code == 201, answer.text
            secrets[name], hook_id = answer.json()["secret"], answer.json()["id"]
        rotated = await client.post(f"/v1/partners/acme/webhooks/{hook_id}/rotate-secret", headers=ADMIN)
        secrets["before rotation"] = secrets["rotated"]
        secrets["rotated"] = rotated.json()["secret"]
        for n in range(3):
            await grant(client, f"r-{n}", evidence={"user_note": f"note {n}"})
        await eventually(lambda: len(receiver.ok()) == 6, what="the grants at both webhooks")
    expected_signers = {frozenset({"plain"}), frozenset({"rotated", "before rotation"})}
    log_before = await query(database_url, sa.select(events).order_by(events.c.position))
    async with app(second, first) as client:  # replicas restarted with the new key, the old one kept readable
        assert (await history(client, "r-0"))[0]["data"]["evidence"] == {"user_note": "note 0"}
        await grant(client, "r-3", evidence={"user_note": "note 3"})
        await eventually(lambda: len(receiver.ok()) == 8, what="r-3's grant at both webhooks")
    new_master = MasterKeys(decode_master_key(second, "k"), [decode_master_key(first, "k")])
    assert await rewrap(database_url, new_master) == (3, 2, 0, 0)
    wrapped_by = {r.master_key_id for r in await query(database_url, sa.select(subject_keys.c.master_key_id))}
    sealed = await query(database_url, sa.select(webhooks.c.id, webhooks.c.secret, webhooks.c.previous_secret,
                                                 webhooks.c.master_key_id).order_by(webhooks.c.id))
    assert wrapped_by == {r.master_key_id for r in sealed} == {new_master.current_id}
    assert await rewrap(database_url, new_master) == (0, 0, 0, 0)  # once is enough: a second run changes nothing
    assert await query(database_url, sa.select(webhooks.c.id, webhooks.c.secret, webhooks.c.previous_secret,
                                               webhooks.c.master_key_id).order_by(webhooks.c.id)) == sealed
    assert await query(database_url, sa.select(events).order_by(events.c.position)
                       .where(events.c.position <= log_before[-1].position)) == log_before  # events untouched
    async with app(second) as client:  # the old key dropped: partners' secrets sign as before
        for n in range(4):
            assert (await history(client, f"r-{n}"))[0]["data"]["evidence"] == {"user_note": f"note {n}"}
        assert await signers_of_withdrawal(client, receiver, "r-0", secrets) == expected_signers
    async with app(first) as client:  # the old key alone opens nothing any more
        answer = await client.get("/v1/subjects/r-0/history", headers=ADMIN)
        assert answer.status_code == 503 and answer.json()["code"] == "master_key_unavailable"
        assert "note 0" not in answer.text

    # The command: a key it does not have stops it before it changes anything; then it rotates again.
    refused = await asyncio.to_thread(run_rewrap, database_url, third)
    assert refused.returncode == 1 and "Nothing was changed" in refused.stderr, tail(refused.stdout + refused.stderr)
    done = await asyncio.to_thread(run_rewrap, database_url, third, f"{first},{second}")
    assert done.returncode == 0, tail(done.stdout + done.stderr)
    assert "4 data keys rewrapped and 2 webhook secrets resealed" in done.stdout
    assert second not in done.stdout + done.stderr and third not in done.stdout + done.stderr
    async with app(third) as client:
        assert (await history(client, "r-2"))[0]["data"]["evidence"] == {"user_note": "note 2"}
        assert await signers_of_withdrawal(client, receiver, "r-1", secrets) == expected_signers


async def test_postgresql_without_a_master_key_refuses_evidence_and_nothing_else(postgresql_url):
    await empty_tables(postgresql_url)
    settings = Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                        allow_ephemeral_keys=True)  # started without a master key, on purpose
    async with AsyncTestClient(create_app(settings)) as client:
        await setup_catalog(client)
        refused = await client.post("/v1/subjects/u-1/consents", headers=ADMIN, json={
            "changes": [{"purpose": "marketing", "action": "grant"}], "evidence": EVIDENCE})
        assert refused.status_code == 422 and refused.json()["code"] == "master_key_missing", refused.text
        assert await history(client, "u-1") == []
        await grant(client, "u-1", evidence=None)
        assert (await client.post("/v1/subjects/u-1/erase", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize("had_key", [True, False], ids=["key-read-before", "no-key-yet"])
async def test_a_write_that_read_before_an_erasure_cannot_leave_readable_data_after_it(postgresql_url, had_key):
    """PostgreSQL, where writers in other processes interleave: load, then an erasure, then save."""
    url = postgresql_url
    await empty_tables(url)
    settings = Settings(database_url=url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        await race_an_erasure(client, url, had_key)


async def race_an_erasure(client, url: str, had_key: bool) -> None:
    await setup_catalog(client)
    await grant(client, "racer", evidence=EVIDENCE if had_key else None)
    keys = SubjectKeys(MasterKeys(decode_master_key(MASTER_KEY, "k")))
    database = Database(url)
    try:
        async with SqlUnitOfWork(database, single_write=True, keys=keys) as uow:
            state = await uow.subjects.load("racer")
            erased = await client.post("/v1/subjects/racer/erase", headers=ADMIN)
            assert erased.status_code == 200
            version = state.version
            late = ConsentGranted(occurred_at=datetime.now(UTC), purpose="marketing", partner=None, scopes=None,
                                  purpose_version=1, source="web", evidence=Evidence(user_note="late canary"))
            state.apply(late)
            with pytest.raises(VersionConflict):
                await uow.subjects.save(state, version, [late], "subject")
    finally:
        await database.dispose()
    assert await key_ids(url, "racer") == []  # no key brought back, none made
    assert "late canary" not in await stored_text(url)
    # The same write through the service retries after the erasure: under a new key of its own.
    await grant(client, "racer", evidence={"user_note": "after"})
    assert [e["data"].get("evidence") for e in await history(client, "racer")] == [
        "[erased]" if had_key else None, None, {"user_note": "after"}]
