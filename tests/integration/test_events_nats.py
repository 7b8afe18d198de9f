"""Events on NATS JetStream: every committed event once, in order, as a valid CloudEvent."""

from __future__ import annotations

import asyncio
import json
import random
from urllib.parse import unquote

import nats
import pytest
import sqlalchemy as sa
from cloudevents.http import from_json
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters.tables import events
from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, NATS_URL, SHARED_KEYS, USER_TOKEN_SECRET, empty_tables

MARKETING = {"title": "Marketing", "description": "Offers", "legal_basis": "consent", "retention": "P30D"}


@pytest.fixture
async def events_app(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    settings = Settings(database_url=postgresql_url, nats_url=NATS_URL, admin_keys=(ADMIN_KEY,),
                        user_token_secret=USER_TOKEN_SECRET, nats_stream=stream, nats_subject_prefix=prefix,
                        **SHARED_KEYS)
    async with AsyncTestClient(create_app(settings)) as client:
        yield client, stream, prefix


async def stream_messages(stream: str, prefix: str, expected: int, timeout: float = 10.0) -> list:
    """Everything in the stream, read by an ordered consumer from the start."""
    nc = await nats.connect(NATS_URL)
    try:
        js = nc.jetstream()
        received = []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            info = await js.stream_info(stream)
            if info.state.messages >= expected or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.05)
        sub = await js.subscribe(f"{prefix}.>", ordered_consumer=True)
        for _ in range(info.state.messages):
            received.append(await sub.next_msg(timeout=5))
        await sub.unsubscribe()
        return received
    finally:
        await nc.close()


async def logged_event_ids(url: str) -> list[str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            query = sa.select(events.c.event_id).order_by(events.c.position)
            return [str(r) for r in (await conn.execute(query)).scalars()]
    finally:
        await engine.dispose()


async def test_events_are_cloudevents_on_the_contract_subjects(events_app, postgresql_url):
    client, stream, prefix = events_app
    nc = await nats.connect(NATS_URL)
    live = await nc.subscribe(f"{prefix}.>")  # a plain subscriber, as a platform team would write
    await nc.flush()  # the subscription is registered before the first event is published
    try:
        await client.put("/v1/scopes/orders", headers=ADMIN,
                         json={"title": "O", "description": "", "sensitivity": "low"})
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        await client.put("/v1/partners/acme", headers=ADMIN,
                         json={"name": "Acme Ltd", "status": "active", "data_uses": {"marketing": ["orders"]}})
        await client.post("/v1/subjects/user-42/consents", headers=ADMIN, json={
            "changes": [{"purpose": "marketing", "partner": "acme", "action": "grant"}], "source": "web",
            "evidence": {"collection_point": "signup", "text_shown": "canary-text-shown"}})
        messages = [await live.next_msg(timeout=5) for _ in range(4)]
    finally:
        await nc.close()

    assert [m.subject for m in messages] == [
        f"{prefix}.scope.defined.orders", f"{prefix}.purpose.defined.marketing",
        f"{prefix}.partner.registered.acme", f"{prefix}.subject.granted.marketing.acme"]
    for message in messages:
        event = from_json(message.data)
        assert event["specversion"] == "1.0"
        assert event["id"] == message.headers["Nats-Msg-Id"]
        assert event["source"] == "/consent"
        assert event["datacontenttype"] == "application/json"
    granted = json.loads(messages[-1].data)
    assert granted["type"] == "io.consent.v1.subject.granted"
    assert granted["subject"] == "user-42"
    assert granted["data"]["purpose"] == "marketing" and granted["data"]["partner"] == "acme"
    assert granted["data"]["scopes"] == ["orders"] and granted["data"]["stream_version"] == 1
    assert granted["data"]["position"] == 4
    # What was shown to the user, and partner names, stay out of the events.
    assert b"canary-text-shown" not in messages[-1].data and b"Acme Ltd" not in messages[2].data
    assert await logged_event_ids(postgresql_url) == [m.headers["Nats-Msg-Id"] for m in messages]


async def test_a_dotted_scope_id_is_one_subject_token_that_a_wildcard_matches(events_app):
    """`profile.email` is published as `profile%2Eemail`: one token, as `<prefix>.scope.defined.*` expects."""
    client, _, prefix = events_app
    nc = await nats.connect(NATS_URL)
    scopes = await nc.subscribe(f"{prefix}.scope.defined.*")
    granted = await nc.subscribe(f"{prefix}.subject.granted.*.*")
    await nc.flush()
    try:
        for scope_id in ("profile", "profile.email"):
            answer = await client.put(f"/v1/scopes/{scope_id}", headers=ADMIN,
                                      json={"title": "P", "description": "", "sensitivity": "low"})
            assert answer.status_code == 201, answer.text
        await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
        await client.put("/v1/partners/acme", headers=ADMIN, json={
            "name": "Acme", "status": "active", "data_uses": {"marketing": ["profile.email"]}})
        # A dotted subject id: never in a NATS subject (the purpose and partner are), only in the CloudEvent.
        answer = await client.post("/v1/subjects/user.42/consents", headers=ADMIN, json={"changes": [
            {"purpose": "marketing", "partner": "acme", "scopes": ["profile.email"], "action": "grant"}]})
        assert answer.status_code == 200, answer.text
        defined = [await scopes.next_msg(timeout=5) for _ in range(2)]
        grant = await granted.next_msg(timeout=5)
    finally:
        await nc.close()

    assert [m.subject for m in defined] == [
        f"{prefix}.scope.defined.profile", f"{prefix}.scope.defined.profile%2Eemail"]
    # The token decodes back to the id with any URL decoder; the CloudEvent carries the id as is.
    assert unquote(defined[1].subject.rsplit(".", 1)[1]) == json.loads(defined[1].data)["subject"] == "profile.email"
    assert grant.subject == f"{prefix}.subject.granted.marketing.acme"
    assert json.loads(grant.data)["subject"] == "user.42"


async def test_no_event_is_skipped_when_transactions_commit_out_of_order(events_app, postgresql_url):
    """A transaction that took a low position and commits late must still be relayed."""
    client, stream, prefix = events_app
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    slow_engine = create_async_engine(postgresql_url)

    async def slow_writer(n: int) -> None:
        # Takes its position now, commits after later positions were published.
        async with slow_engine.begin() as conn:
            await conn.execute(sa.text(
                "INSERT INTO events (event_id, stream_id, stream_version, type, data, metadata, recorded_at, hash) "
                "VALUES (gen_random_uuid(), :stream, 1, 'subject.granted', CAST(:data AS jsonb), '{}', now(), "
                "sha256('not checked here'::bytea))"),
                {"stream": f"subject:slow-{n}", "data": json.dumps({
                    "occurred_at": "2026-01-01T00:00:00Z", "purpose": "marketing", "partner": None,
                    "scopes": None, "purpose_version": 1, "source": "api"})})
            await asyncio.sleep(random.uniform(0.2, 0.8))

    async def fast_writer(n: int) -> None:
        answer = await client.post(f"/v1/subjects/fast-{n}/consents", headers=ADMIN,
                                   json={"changes": [{"purpose": "marketing", "action": "grant"}]})
        assert answer.status_code == 200, answer.text

    try:
        await asyncio.gather(*[slow_writer(n) for n in range(8)], *[fast_writer(n) for n in range(40)])
    finally:
        await slow_engine.dispose()

    logged = await logged_event_ids(postgresql_url)
    received = await stream_messages(stream, prefix, expected=len(logged))
    ids = [m.headers["Nats-Msg-Id"] for m in received]
    assert len(ids) == len(set(ids)), "an event was published twice"
    assert set(ids) == set(logged), f"missing from NATS: {set(logged) - set(ids)}"


async def test_the_subscriber_example_deletes_on_withdrawal(events_app, monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "delete_partner_copy.py"
    spec = importlib.util.spec_from_file_location("delete_partner_copy", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    deleted = []

    async def record(partner, subject, purpose):
        deleted.append((partner, subject, purpose))

    monkeypatch.setattr(example, "delete_copy", record)
    client, stream, prefix = events_app
    await client.put("/v1/scopes/orders", headers=ADMIN, json={"title": "O", "description": "", "sensitivity": "low"})
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    for partner in ("acme", "globex"):
        await client.put(f"/v1/partners/{partner}", headers=ADMIN,
                         json={"name": partner, "status": "active", "data_uses": {"marketing": ["orders"]}})
    for partner in ("acme", "globex"):
        for action in ("grant", "withdraw"):
            await client.post("/v1/subjects/user-7/consents", headers=ADMIN, json={
                "changes": [{"purpose": "marketing", "partner": partner, "action": action}]})
    await asyncio.wait_for(example.consume("acme", NATS_URL, stream, prefix, stop_after=4), timeout=20)
    assert deleted == [("acme", "user-7", "marketing")]  # globex's withdrawal is not acme's business


async def test_governance_reads_stay_in_the_log_and_out_of_the_stream(events_app, postgresql_url):
    """An admin's read of a history is audited in the log; subscribers get consent changes only."""
    client, stream, prefix = events_app
    await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
    change = {"changes": [{"purpose": "marketing", "action": "grant"}]}
    assert (await client.post("/v1/subjects/u-9/consents", headers=ADMIN, json=change)).status_code == 200
    assert (await client.get("/v1/subjects/u-9/history", headers=ADMIN)).status_code == 200
    withdraw = {"changes": [{"purpose": "marketing", "action": "withdraw"}]}
    assert (await client.post("/v1/subjects/u-9/consents", headers=ADMIN, json=withdraw)).status_code == 200
    engine = create_async_engine(postgresql_url)
    try:
        async with engine.connect() as conn:
            logged = (await conn.execute(sa.select(events.c.event_id, events.c.type)
                                         .order_by(events.c.position))).all()
    finally:
        await engine.dispose()
    assert [t for _, t in logged] == ["purpose.defined", "subject.granted", "audit.subject_history_read",
                                      "subject.withdrawn"]
    received = await stream_messages(stream, prefix, expected=3)
    assert [m.headers["Nats-Msg-Id"] for m in received] == [str(i) for i, t in logged if not t.startswith("audit.")]
