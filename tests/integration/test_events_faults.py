"""Fault tests on real PostgreSQL and NATS: a killed service, a NATS outage. Nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import httpx
import nats
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.config import Settings
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    NATS_URL,
    SHARED_KEYS,
    SHARED_KEYS_ENV,
    USER_TOKEN_SECRET,
    empty_tables,
    user_headers,
)
from tests.integration.test_events_nats import MARKETING, logged_event_ids, stream_messages

NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def wait_until(predicate, timeout: float = 15.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


SIGNING_KEY = "test-signing-key-shared-by-replicas"


def start_service(database_url: str, nats_url: str, stream: str, prefix: str, port: int,
                  **settings: str) -> subprocess.Popen:
    """A replica on `port`; `settings` are more CONSENT_* variables (partner_rate_limit="20")."""
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database_url, "CONSENT_NATS_URL": nats_url,
           "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix,
           "CONSENT_TOKEN_SIGNING_KEY": SIGNING_KEY,
           **{f"CONSENT_{name.upper()}": value for name, value in settings.items()}}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "consent.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"], env=env)


async def ready(base: str) -> bool:
    try:
        async with httpx.AsyncClient() as http:
            return (await http.get(f"{base}/health/ready")).status_code == 200
    except httpx.HTTPError:
        return False


def assert_exactly_once(received: list, logged: list[str]) -> None:
    ids = [m.headers["Nats-Msg-Id"] for m in received]
    assert len(ids) == len(set(ids)), "an event reached the stream twice"
    assert set(ids) == set(logged), f"missing from the stream: {len(set(logged) - set(ids))}"


async def test_sigkill_between_commit_and_publish_loses_and_duplicates_nothing(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = start_service(postgresql_url, NATS_URL, stream, prefix, port)
    try:
        await wait_until(lambda: ready(base), what="service ready")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            await http.put("/v1/purposes/marketing", json=MARKETING)

            async def write(n: int) -> None:
                try:
                    await http.post(f"/v1/subjects/k-{n}/consents",
                                    json={"changes": [{"purpose": "marketing", "action": "grant"}]})
                except httpx.HTTPError:
                    pass  # the process was killed under this request

            writers = [asyncio.create_task(write(n)) for n in range(300)]
            await asyncio.sleep(0.3)
            service.send_signal(signal.SIGKILL)  # mid-stream: commits without publishes, publishes without checkpoints
            await asyncio.gather(*writers)
        service.wait(timeout=10)
        service = start_service(postgresql_url, NATS_URL, stream, prefix, port)
        await wait_until(lambda: ready(base), what="service ready again")
        logged = await logged_event_ids(postgresql_url)
        assert len(logged) > 1
        received = await stream_messages(stream, prefix, expected=len(logged), timeout=20)
        assert_exactly_once(received, logged)
    finally:
        service.kill()
        service.wait(timeout=10)


async def test_writes_go_on_while_nats_is_down_and_arrive_after_in_order(postgresql_url):
    await empty_tables(postgresql_url)
    port = free_port()
    nats_url = f"nats://127.0.0.1:{port}"
    storage = tempfile.mkdtemp(prefix="consent-nats-")
    command = [NATS_SERVER, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", storage]
    own_nats = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = Settings(database_url=postgresql_url, nats_url=nats_url, admin_keys=(ADMIN_KEY,),
                        user_token_secret=USER_TOKEN_SECRET, **SHARED_KEYS)
    try:
        async with AsyncTestClient(create_app(settings)) as client:
            relay = client.app.state.container.relay

            async def relay_caught_up() -> bool:
                return relay.published_position == max(await logged_positions(client))

            await client.put("/v1/purposes/marketing", headers=ADMIN, json=MARKETING)
            await wait_until(relay_caught_up, what="first publish")

            own_nats.terminate()
            own_nats.wait(timeout=10)
            for n in range(20):  # every write still succeeds: the log is the outbox
                answer = await client.post("/v1/subjects/ordered/consents", headers=ADMIN, json={
                    "changes": [{"purpose": "marketing", "action": "grant" if n % 2 == 0 else "withdraw"}]})
                assert answer.status_code == 200, answer.text

            own_nats = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await wait_until(relay_caught_up, timeout=30, what="publishing after NATS returned")

        nc = await nats.connect(nats_url)
        try:
            js = nc.jetstream()
            sub = await js.subscribe("consent.v1.>", ordered_consumer=True)
            received = [await sub.next_msg(timeout=5) for _ in range((await js.stream_info("CONSENT")).state.messages)]
        finally:
            await nc.close()
        assert_exactly_once(received, await logged_event_ids(postgresql_url))
        versions = [int(__import__("json").loads(m.data)["data"]["stream_version"])
                    for m in received if m.subject.startswith("consent.v1.subject.")]
        assert versions == list(range(1, 21))  # one subject's stream, in stream-version order
    finally:
        own_nats.kill()
        own_nats.wait(timeout=10)
        shutil.rmtree(storage, ignore_errors=True)


async def logged_positions(client) -> list[int]:
    # Read as the subject itself: an admin's read would append an audit event of its own.
    history = (await client.get("/v1/subjects/ordered/history", headers=user_headers("ordered"))).json()["events"]
    return [e["position"] for e in history] or [1]


async def relay_state(base: str) -> dict:
    async with httpx.AsyncClient() as http:
        return (await http.get(f"{base}/health/ready")).json()["relay"]


async def test_one_process_relays_and_another_takes_over_when_it_dies(postgresql_url, nats_names):
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{p}" for p in ports]
    services = [start_service(postgresql_url, NATS_URL, stream, prefix, ports[0])]
    try:
        await wait_until(lambda: ready(bases[0]), what="first service ready")
        async with httpx.AsyncClient(base_url=bases[0], headers=ADMIN) as http:
            assert (await http.put("/v1/purposes/marketing", json=MARKETING)).status_code == 201
        # Started after the catalog change, so both know it (following other replicas' catalog
        # changes live is the replicas issue's work).
        services.append(start_service(postgresql_url, NATS_URL, stream, prefix, ports[1]))
        await wait_until(lambda: ready(bases[1]), what="second service ready")

        async def one_leader() -> bool:
            return [(await relay_state(b))["leader"] for b in bases].count(True) == 1

        await wait_until(one_leader, what="exactly one relay leader")
        leader = [(await relay_state(b))["leader"] for b in bases].index(True)
        survivor = 1 - leader
        services[leader].send_signal(signal.SIGKILL)
        services[leader].wait(timeout=10)

        async with httpx.AsyncClient(base_url=bases[survivor], headers=ADMIN) as http:
            for n in range(5):  # the survivor kept serving HTTP all along
                answer = await http.post(f"/v1/subjects/t-{n}/consents",
                                         json={"changes": [{"purpose": "marketing", "action": "grant"}]})
                assert answer.status_code == 200, answer.text

        async def survivor_leads() -> bool:
            return (await relay_state(bases[survivor]))["leader"]

        await wait_until(survivor_leads, timeout=30, what="the survivor to take over")
        logged = await logged_event_ids(postgresql_url)
        assert_exactly_once(await stream_messages(stream, prefix, expected=len(logged), timeout=20), logged)
    finally:
        for service in services:
            service.kill()
            service.wait(timeout=10)
