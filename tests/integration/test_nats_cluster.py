"""Two service replicas on PostgreSQL over a 3-node NATS JetStream cluster (scripts/nats-cluster.sh) with an
R3 stream: the stream leader is SIGKILLed under load and later restarted. Every acknowledged write reaches the
stream exactly once, in stream-version order per subject; decisions keep answering on both replicas; a
decision with `min_position` from the other replica is never stale; both feeds catch up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest

from consent.adapters import migrate
from tests.conftest import ADMIN, ADMIN_KEY, SHARED_KEYS_ENV, create_postgres_database, drop_postgres_database, tail
from tests.integration.test_events_faults import (
    NATS_SERVER,
    assert_exactly_once,
    free_port,
    port_is_free,
    ready,
    wait_until,
)
from tests.integration.test_events_nats import MARKETING, logged_event_ids

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "nats-cluster.sh"
STREAM, PREFIX = "CONSENT_CLUSTER", "cluster.consent.v1"


def free_base() -> int:
    """A base port whose 3 client and 3 cluster ports (base..base+2, base+100..base+102) are free."""
    for _ in range(50):
        base = free_port()
        if base < 60000 and all(port_is_free(base + offset) for offset in (1, 2, 100, 101, 102)):
            return base
    raise AssertionError("no free ports for the cluster")


@pytest.fixture
def cluster(tmp_path):
    base = free_base()
    started = subprocess.run([str(SCRIPT), "start", str(tmp_path), str(base)], capture_output=True, text=True,
                             timeout=60)
    assert started.returncode == 0, started.stderr
    try:
        yield tmp_path, base, started.stdout.strip()
    finally:
        subprocess.run([str(SCRIPT), "stop", str(tmp_path)], timeout=60)


def start_replica(database: str, servers: str, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database, "CONSENT_NATS_URL": servers,
           "CONSENT_NATS_REPLICAS": "3", "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_NATS_STREAM": STREAM,
           "CONSENT_NATS_SUBJECT_PREFIX": PREFIX, "CONSENT_LOG_FORMAT": "text"}
    with log.open("w") as output:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], env=env,
                                stdout=output, stderr=subprocess.STDOUT)


async def patiently(attempt, tries: int = 6):
    """A JetStream request, again while the cluster answers with timeouts (a busy machine, an election)."""
    for remaining in range(tries - 1, -1, -1):
        try:
            return await attempt()
        except nats.errors.TimeoutError:
            if remaining == 0:
                raise
            await asyncio.sleep(1.0)


async def stream_leader(servers: list[str]) -> str:
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream(timeout=20)
        return (await patiently(lambda: js.stream_info(STREAM))).cluster.leader
    finally:
        await nc.close()


async def whole_stream(servers: list[str], expected: int, logs: list[Path]) -> list:
    nc = await nats.connect(servers=servers)
    try:
        js = nc.jetstream(timeout=20)
        try:
            await wait_until(lambda: _has(js, expected), timeout=90, what=f"{expected} messages on the stream")
        except AssertionError:
            found = (await js.stream_info(STREAM)).state.messages
            raise AssertionError(f"{found} of {expected} messages on the stream; the replicas said:\n"
                                 + "\n".join(line for log in logs for line in log.read_text().splitlines()
                                             if "consent.access" not in line)[-3000:]) from None
        total = (await patiently(lambda: js.stream_info(STREAM))).state.messages
        sub = await patiently(lambda: js.subscribe(f"{PREFIX}.>", ordered_consumer=True))
        return [await sub.next_msg(timeout=20) for _ in range(total)]
    finally:
        await nc.close()


async def _has(js, expected: int) -> bool:
    try:
        return (await js.stream_info(STREAM)).state.messages >= expected
    except Exception:  # noqa: BLE001 - a leader election in progress
        return False


async def test_a_nats_node_killed_under_load_loses_and_repeats_nothing(cluster):
    directory, base, urls = cluster
    servers = urls.split(",")
    database = await create_postgres_database()
    await asyncio.to_thread(migrate.upgrade, database)
    ports = [free_port(), free_port()]
    logs = [directory / f"replica-{n}.log" for n in range(2)]
    replicas = [start_replica(database, urls, port, log) for port, log in zip(ports, logs, strict=True)]
    a, b = (f"http://127.0.0.1:{port}" for port in ports)
    try:
        for base_url, log in zip((a, b), logs, strict=True):
            try:
                await wait_until(lambda u=base_url: ready(u), timeout=60, what="replica ready")
            except AssertionError:
                raise AssertionError(tail(log.read_text())) from None
        async with httpx.AsyncClient(headers=ADMIN, timeout=30) as http:
            assert (await http.put(f"{a}/v1/scopes/profile", json={
                "title": "Profile", "description": "", "sensitivity": "low"})).status_code == 201
            assert (await http.put(f"{a}/v1/purposes/marketing", json=MARKETING)).status_code == 201
            nc = await nats.connect(servers=servers)
            info = await patiently(lambda: nc.jetstream(timeout=20).stream_info(STREAM))
            await nc.close()
            assert info.config.num_replicas == 3

            acknowledged, writes, decisions, stale = [], [], [], []

            async def writer(n: int) -> None:
                """Writes on A and B by turns; after each on A, B is asked with A's position."""
                for k in range(40):
                    on, other = (a, b) if (n + k) % 2 == 0 else (b, a)
                    subject = f"c-{n}"
                    action = "grant" if k % 2 == 0 else "withdraw"
                    answer = await http.post(f"{on}/v1/subjects/{subject}/consents",
                                             json={"changes": [{"purpose": "marketing", "action": action}]})
                    writes.append(answer.status_code)
                    if answer.status_code != 200:
                        continue
                    acknowledged.extend(receipt["event_id"] for receipt in answer.json()["receipts"])
                    decided = await http.post(f"{other}/v1/decisions", json={
                        "subject_id": subject, "purpose": "marketing", "scopes": ["profile"],
                        "min_position": answer.json()["position"]})
                    decisions.append(decided.status_code)
                    if decided.status_code == 200 and (decided.json()["decision"] == "permit") != (action == "grant"):
                        stale.append((subject, k))
                    await asyncio.sleep(0.02)

            async def chaos() -> None:
                await asyncio.sleep(1.0)
                leader = await stream_leader(servers)
                pid = int((directory / leader / "nats.pid").read_text())
                os.kill(pid, signal.SIGKILL)
                await asyncio.sleep(3.0)
                subprocess.Popen([NATS_SERVER, "-c", str(directory / leader / "nats.conf"),
                                  "-l", str(directory / leader / "nats.log"), "-P",
                                  str(directory / leader / "nats.pid")])

            await asyncio.gather(*(writer(n) for n in range(8)), chaos())

        assert set(writes) == {200}, writes  # the log is the outbox: writes do not wait for NATS
        assert len(acknowledged) >= 300 and stale == []
        assert set(decisions) == {200}, decisions  # decisions need no NATS: they never failed
        logged = await logged_event_ids(database)
        received = await whole_stream(servers, len(logged), logs)
        assert_exactly_once(received, logged)
        assert set(acknowledged) <= set(logged)
        by_subject: dict[str, list[int]] = {}
        for message in received:
            body = json.loads(message.data)
            if message.subject.startswith(f"{PREFIX}.subject."):
                by_subject.setdefault(body["subject"], []).append(body["data"]["stream_version"])
        assert by_subject and all(v == sorted(v) for v in by_subject.values())
        for base_url in (a, b):  # both feeds back, caught up
            await wait_until(lambda u=base_url: ready(u), timeout=60, what="replica ready after the node returned")
    finally:
        for replica in replicas:
            replica.terminate()
        for replica in replicas:
            replica.wait(timeout=15)
        await drop_postgres_database(database)
