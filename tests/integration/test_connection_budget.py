"""Four replicas on one PostgreSQL whose `max_connections` is 100, under 400 concurrent writes: each holds at
most CONSENT_DATABASE_POOL_SIZE connections, requests beyond them wait their turn, and none answers 5xx."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import asyncpg
import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy.exc import TimeoutError as PoolTimeout

from consent.adapters import migrate
from consent.adapters.database import (
    HELD_SESSIONS,
    RELAY_CONNECTIONS,
    SENDER_CONNECTIONS,
    SERVER_CONNECTIONS,
    database_of,
    split_budget,
)
from consent.api.app import create_app
from consent.config import MIN_POOL_SIZE, Settings, SettingsError
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    SHARED_KEYS,
    SHARED_KEYS_ENV,
    create_postgres_database,
    delete_nats_stream,
    drop_postgres_database,
    empty_tables,
    new_nats_names,
    on_app_loop,
    tail,
)
from tests.integration.test_events_faults import free_port, ready, wait_until
from tests.integration.test_events_nats import MARKETING

REPLICAS, WRITES, POOL_SIZE = 4, 400, 20


def start_replica(database: str, stream: str, prefix: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database, "CONSENT_NATS_URL": "nats://127.0.0.1:4222",
           "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix, "CONSENT_ADMIN_KEYS": ADMIN_KEY,
           "CONSENT_DATABASE_POOL_SIZE": str(POOL_SIZE), "CONSENT_LOG_FORMAT": "text", "CONSENT_ACCESS_LOG": "0"}
    with log.open("w") as output:
        return subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], env=env,
                                stdout=output, stderr=subprocess.STDOUT)


async def backends_of(admin: asyncpg.Connection, database: str) -> int:
    return await admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database)


async def test_four_replicas_share_a_hundred_connections_without_a_5xx(tmp_path):
    url = await create_postgres_database()
    await asyncio.to_thread(migrate.upgrade, url)
    parts = urllib.parse.urlsplit(url.replace("+asyncpg", ""))
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")))
    limit = int(await admin.fetchval("SHOW max_connections"))
    stream, prefix = new_nats_names()
    ports = [free_port() for _ in range(REPLICAS)]
    logs = [tmp_path / f"replica-{n}.log" for n in range(REPLICAS)]
    replicas = [start_replica(url, stream, prefix, port, log) for port, log in zip(ports, logs, strict=True)]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        assert REPLICAS * POOL_SIZE < limit <= 100  # the arithmetic of docs/scaling.md, on a default server
        for base, log in zip(bases, logs, strict=True):
            try:
                await wait_until(lambda b=base: ready(b), timeout=60, what="replica ready")
            except AssertionError:
                raise AssertionError(tail(log.read_text())) from None
        limits = httpx.Limits(max_connections=2 * WRITES, max_keepalive_connections=2 * WRITES)
        async with httpx.AsyncClient(headers=ADMIN, timeout=60, limits=limits) as http:
            assert (await http.put(f"{bases[0]}/v1/purposes/marketing", json=MARKETING)).status_code == 201
            for base in bases:  # the catalog reaches the others through the feed
                await wait_until(lambda b=base: _knows_marketing(http, b), timeout=30, what="catalog on every replica")

            peak = 0
            done = asyncio.Event()

            async def watch() -> None:
                nonlocal peak
                while not done.is_set():
                    peak = max(peak, await backends_of(admin, name))
                    await asyncio.sleep(0.02)

            async def write(n: int) -> int:
                # Half in a transaction of their own (with an Idempotency-Key), half batched.
                headers = {"Idempotency-Key": f"burst-{n}"} if n % 2 else {}
                answer = await http.post(f"{bases[n % REPLICAS]}/v1/subjects/burst-{n}/consents", headers=headers,
                                         json={"changes": [{"purpose": "marketing", "action": "grant"}]})
                return answer.status_code

            async def read(n: int) -> int:
                # Audited: every read appends to the admin key's one audit stream, raced by all four replicas.
                return (await http.get(f"{bases[n % REPLICAS]}/v1/subjects/burst-{n}/history")).status_code

            # Every client connection open beforehand, so that the writes arrive together.
            await asyncio.gather(*(http.get(f"{bases[n % REPLICAS]}/health/live") for n in range(WRITES)))
            watcher = asyncio.create_task(watch())
            statuses = await asyncio.gather(*(write(n) for n in range(WRITES)),
                                            *(read(n) for n in range(WRITES // 2)))
            done.set()
            await watcher

        assert set(statuses) == {200}, {status: statuses.count(status) for status in set(statuses)}
        assert 0 < peak <= REPLICAS * POOL_SIZE, peak
        own = await asyncpg.connect(url.replace("+asyncpg", ""))
        try:
            assert await own.fetchval("SELECT count(*) FROM subjects WHERE subject_id LIKE 'burst-%'") == WRITES
        finally:
            await own.close()
        print(f"\n{WRITES} concurrent writes on {REPLICAS} replicas: all 200, at most {peak} connections "
              f"(budget {REPLICAS} x {POOL_SIZE}, server max {limit})")
    finally:
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.wait(timeout=15)
        await admin.close()
        await drop_postgres_database(url)
        await delete_nats_stream(stream)


async def _knows_marketing(http: httpx.AsyncClient, base: str) -> bool:
    return (await http.get(f"{base}/v1/purposes/marketing")).status_code == 200


@pytest.mark.parametrize("size", [None, 20, 64])
@pytest.mark.parametrize(("relay", "sender"), [("inline", "inline"), ("process", "inline"), ("inline", "process"),
                                               ("process", "process")])
def test_a_replica_can_open_exactly_its_budget(size, relay, sender):
    apart = RELAY_CONNECTIONS * (relay == "process") + SENDER_CONNECTIONS * (sender == "process")
    size = size or max(MIN_POOL_SIZE, SERVER_CONNECTIONS + apart)  # the least it starts with
    settings = Settings(database_url="postgresql+asyncpg://consent@127.0.0.1/consent", relay=relay,
                        webhook_sender=sender, nats_url="nats://127.0.0.1:4222", database_pool_size=size)
    server = database_of(settings)
    parts = [server.engine, server.autocommit_engine, server.batcher_engine()[0]]
    for child, connections in (("process" == relay, RELAY_CONNECTIONS), ("process" == sender, SENDER_CONNECTIONS)):
        if child:
            database = database_of(settings, apart=connections)
            parts += [database.engine, database.autocommit_engine]
    assert all(engine.pool._max_overflow == 0 for engine in parts)  # noqa: SLF001 - no overflow above the budget
    assert sum(engine.pool.size() for engine in parts) == size
    if SERVER_CONNECTIONS + apart > MIN_POOL_SIZE:  # below MIN_POOL_SIZE the setting itself is refused
        with pytest.raises(SettingsError, match=f"at least {SERVER_CONNECTIONS + apart}"):
            database_of(msgspec.structs.replace(settings, database_pool_size=SERVER_CONNECTIONS + apart - 1))


def test_every_budget_leaves_room_for_the_leaders_sessions_and_the_requests():
    for size in range(SERVER_CONNECTIONS, 200):
        transactions, statements, batcher = split_budget(size, batcher=True)
        assert transactions >= HELD_SESSIONS + 2 and statements >= 1 and batcher >= 1, size
        assert transactions + statements + batcher == size


async def test_a_request_finding_every_connection_busy_waits_then_answers_503(postgresql_url):
    # The session's database may hold another test's data under a master key this app lacks: its reads would
    # answer 503 master_key_unavailable, which is not what this test is about.
    await empty_tables(postgresql_url)
    settings = Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,), **SHARED_KEYS, scheduler_interval=0,
                        checkpoint_interval=0, metrics_flush_interval=0, database_pool_size=MIN_POOL_SIZE,
                        database_pool_timeout=0.3)
    async with AsyncTestClient(create_app(settings)) as client:
        database = client.app.state.container.database

        async def take_every_connection():
            """Every connection, and any that background parts give back, until told to stop."""
            stop, held = asyncio.Event(), contextlib.AsyncExitStack()

            async def take(engine) -> None:
                while not stop.is_set():
                    with contextlib.suppress(PoolTimeout):
                        await held.enter_async_context(engine.connect())

            return stop, held, [asyncio.create_task(take(e)) for e in (database.engine, database.autocommit_engine)]

        async def give_back(stop, held, takers) -> None:
            stop.set()
            await asyncio.gather(*takers)
            await held.aclose()

        taking = await on_app_loop(client, take_every_connection)
        await asyncio.sleep(1.0)
        answer = await client.get("/v1/audit", headers=ADMIN)
        await on_app_loop(client, give_back, *taking)
        assert answer.status_code == 503 and answer.json()["code"] == "unavailable", answer.text
        assert answer.headers["retry-after"] == "1"
        served = await client.get("/v1/audit", headers=ADMIN)  # the connections back, the next one is served
        assert served.status_code == 200, served.text


async def test_workers_on_postgresql_and_nats_serve_as_replicas_sharing_the_budget(tmp_path):
    url = await create_postgres_database()
    await asyncio.to_thread(migrate.upgrade, url)
    stream, prefix = new_nats_names()
    port = free_port()
    log = tmp_path / "serve.log"
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": url, "CONSENT_NATS_URL": "nats://127.0.0.1:4222",
           "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix, "CONSENT_ADMIN_KEYS": ADMIN_KEY,
           "CONSENT_DATABASE_POOL_SIZE": "20", "CONSENT_LOG_FORMAT": "text"}
    too_small = subprocess.run([sys.executable, "-m", "consent.cli", "serve", "--workers", "3", "--port", str(port)],
                               env=env, capture_output=True, text=True, timeout=30)
    assert too_small.returncode == 2 and "CONSENT_DATABASE_POOL_SIZE=20" in too_small.stderr, too_small.stderr
    with log.open("w") as output:
        server = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--workers", "2", "--port", str(port)],
                                  env=env, stdout=output, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        try:
            await wait_until(lambda: ready(base), timeout=60, what="workers ready")
        except AssertionError:
            raise AssertionError(tail(log.read_text())) from None

        async def both_workers_counted() -> bool:  # each worker answers for itself; both must have heard the other
            async with httpx.AsyncClient() as http:
                answers = [(await http.get(f"{base}/metrics")).text for _ in range(8)]
            return all("consent_replicas_live 2.0" in text for text in answers)

        await wait_until(both_workers_counted, timeout=15, what="two workers to count each other")
        async with httpx.AsyncClient(headers=ADMIN, timeout=30) as http:
            assert (await http.put(f"{base}/v1/purposes/marketing", json=MARKETING)).status_code == 201
            answers = await asyncio.gather(*(http.post(f"{base}/v1/subjects/w-{n}/consents", json={
                "changes": [{"purpose": "marketing", "action": "grant"}]}) for n in range(100)))
        assert {answer.status_code for answer in answers} == {200}
        parts = urllib.parse.urlsplit(url.replace("+asyncpg", ""))
        admin = await asyncpg.connect(urllib.parse.urlunsplit((parts.scheme, parts.netloc, "/postgres", "", "")))
        try:
            opened = await backends_of(admin, parts.path.lstrip("/"))
        finally:
            await admin.close()
        assert 0 < opened <= 20, opened  # two workers of 10 each
    finally:
        server.terminate()
        server.wait(timeout=30)
        await drop_postgres_database(url)
        await delete_nats_stream(stream)
