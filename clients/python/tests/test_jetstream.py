"""EventSubscriber on the real NATS at 127.0.0.1:4222, fed by `consent serve` on PostgreSQL with the relay on.

The stream and subject prefix are this module's own (as new_nats_names in tests/conftest.py does), deleted after.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import asyncpg
import nats
import pytest
import sqlalchemy as sa
from conftest import NATS_URL, POSTGRES_URL, Admin, new_subject, serving
from consent_client import CONSENT_ENDED, AsyncPartnerClient, CloudEvent
from consent_client.jetstream import EventSubscriber, RejectEvent


@pytest.fixture(scope="module")
async def service():
    """(admin, stream, subject prefix) of a service on a fresh PostgreSQL database, publishing to NATS."""
    tag = uuid.uuid4().hex[:10]
    database, stream, prefix = f"consent_client_{tag}", f"CONSENT_C{tag}", f"c{tag}.consent.v1"
    conn = await asyncpg.connect(POSTGRES_URL)
    await conn.execute(f'CREATE DATABASE "{database}"')
    url = sa.make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg", database=database)
    env = {"CONSENT_DATABASE_URL": url.render_as_string(hide_password=False), "CONSENT_NATS_URL": NATS_URL,
           "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix,
           "CONSENT_ALLOW_EPHEMERAL_KEYS": "true"}
    try:
        with serving(env, "--migrate") as base:
            admin = Admin(base)
            admin.define_catalog()
            yield admin, stream, prefix
            admin.http.close()
    finally:
        nc = await nats.connect(NATS_URL)
        try:
            await nc.jetstream().delete_stream(stream)
        finally:
            await nc.close()
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.close()


@pytest.fixture
async def js():
    nc = await nats.connect(NATS_URL)
    yield nc.jetstream()
    await nc.close()


async def run_until(subscriber: EventSubscriber, handler, done: asyncio.Event, timeout: float = 20) -> None:
    async def stop_when_done() -> None:
        await done.wait()
        subscriber.stop()

    stopper = asyncio.create_task(stop_when_done())
    try:
        await asyncio.wait_for(subscriber.run(handler), timeout)
    finally:
        stopper.cancel()


async def test_events_are_parsed_acked_after_the_handler_retried_on_failure_and_rejected_for_good(service, js):
    admin, stream, prefix = service
    kept, refused = new_subject(), new_subject()
    admin.consent(kept)
    admin.consent(kept, action="withdraw")
    admin.consent(refused)
    durable = "client-test"
    subscriber = EventSubscriber(js, durable, stream=stream, subject=f"{prefix}.>", retry_delay=0.2,
                                 fetch_timeout=0.5)
    handled: list[tuple[CloudEvent, int]] = []  # each call, with how many times that event came before
    done = asyncio.Event()

    async def handle(event: CloudEvent) -> None:
        handled.append((event, sum(seen.id == event.id for seen, _ in handled)))
        if event.subject == refused:
            raise RejectEvent
        if event.type in CONSENT_ENDED and handled[-1][1] == 0:
            raise RuntimeError("the deletion job is down")  # first attempt only
        if event.type in CONSENT_ENDED:
            done.set()

    await run_until(subscriber, handle, done)

    kinds = [event.kind for event, _ in handled]
    assert {"purpose.defined", "scope.defined", "partner.registered"} <= set(kinds)
    # Every id in the CloudEvent's subject as is, though the NATS subject token is percent-encoded.
    assert {e.subject for e, _ in handled if e.kind == "scope.defined"} == {"profile.email", "orders.history"}
    about_kept = [(event.kind, again) for event, again in handled if event.subject == kept]
    assert about_kept == [("subject.granted", 0), ("subject.withdrawn", 0), ("subject.withdrawn", 1)]
    granted = next(e for e, _ in handled if e.subject == kept and e.kind == "subject.granted")
    change = granted.consent_change()
    assert (change.purpose, change.partner, change.scopes, change.source) == (
        "marketing", "acme", ["profile.email"], "admin")
    assert granted.source == "/consent" and granted.data["position"] == granted.position
    assert [again for e, again in handled if e.subject == refused] == [0]

    # Nothing left unacknowledged; the rejected event never comes back.
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0
    assert info.config.ack_policy == "explicit" and info.config.max_deliver == 10

    # A withdrawal's position is a consistency token: a decision at least that fresh sees it.
    withdrawn = next(e for e, _ in handled if e.subject == kept and e.kind == "subject.withdrawn")
    async with AsyncPartnerClient(admin.base, *admin.credential()) as consent:
        decision = await consent.decide(kept, "marketing", ["profile.email"], min_position=withdrawn.position)
    assert decision.decision == "deny" and decision.denied[0].reason == "consent_withdrawn"
    assert decision.position >= withdrawn.position

    # Durable: the next run resumes after the last acknowledgement, and a payload that is no
    # CloudEvent is terminated rather than handed to the handler or redelivered.
    await js.publish(f"{prefix}.subject.granted._._", b"not a cloudevent", stream=stream)
    later = new_subject()
    admin.consent(later)
    second: list[CloudEvent] = []
    resumed = asyncio.Event()

    async def handle_later(event: CloudEvent) -> None:
        second.append(event)
        if event.subject == later:
            resumed.set()

    with _logged("consent_client.jetstream") as lines:
        await run_until(EventSubscriber(js, durable, stream=stream, subject=f"{prefix}.>", fetch_timeout=0.5),
                        handle_later, resumed)
    assert not {e.id for e in second} & {e.id for e, _ in handled}
    assert [e.kind for e in second if e.subject == later] == ["subject.granted"]
    assert any("no CloudEvent" in line for line in lines)
    info = await js.consumer_info(stream, durable)
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_filtered_consumer_sees_only_its_partners_subject_events(service, js):
    admin, stream, prefix = service
    subject = new_subject()
    admin.consent(subject, partner=None)  # first party: partner token `_`
    admin.consent(subject)
    seen: list[CloudEvent] = []
    done = asyncio.Event()

    async def handle(event: CloudEvent) -> None:
        seen.append(event)
        if event.subject == subject:
            done.set()

    subscriber = EventSubscriber(js, "acme-only", stream=stream, subject=f"{prefix}.subject.*.*.acme",
                                 fetch_timeout=0.5)
    await run_until(subscriber, handle, done)
    assert seen and all(e.kind.startswith("subject.") and e.data["partner"] == "acme" for e in seen)
    assert [e.consent_change().partner for e in seen if e.subject == subject] == ["acme"]


class _logged:
    """The messages of one logger while the block runs."""

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.lines: list[str] = []
        self.handler = logging.Handler(logging.DEBUG)
        self.handler.emit = lambda record: self.lines.append(record.getMessage())

    def __enter__(self) -> list[str]:
        self.logger.addHandler(self.handler)
        return self.lines

    def __exit__(self, *_: object) -> None:
        self.logger.removeHandler(self.handler)
