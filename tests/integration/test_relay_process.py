"""CONSENT_RELAY=process: the relay in a child of `consent serve`, restarted when it dies; `consent relay` alone."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from consent.adapters.relay_process import relay_env
from consent.config import Settings
from tests.conftest import ADMIN, ADMIN_KEY, NATS_URL, SHARED_KEYS_ENV, empty_tables
from tests.integration.test_events_faults import (
    SIGNING_KEY,
    assert_exactly_once,
    free_port,
    ready,
    relay_state,
    wait_until,
)
from tests.integration.test_events_nats import MARKETING, logged_event_ids, stream_messages


def start_service(database_url: str, stream: str, prefix: str, port: int, relay: str) -> subprocess.Popen:
    env = {**os.environ, **SHARED_KEYS_ENV, "CONSENT_DATABASE_URL": database_url, "CONSENT_NATS_URL": NATS_URL,
           "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix,
           "CONSENT_TOKEN_SIGNING_KEY": SIGNING_KEY, "CONSENT_RELAY": relay}
    return subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "consent.api.app:create_app", "--factory", "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "warning"], env=env)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: its parent has not reaped it yet.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def grant(_n: int) -> dict:
    return {"changes": [{"purpose": "marketing", "action": "grant"}], "source": "web"}


def test_relay_setting_is_checked():
    assert Settings.from_env({"CONSENT_RELAY": "process"}).relay == "process"
    assert Settings.from_env({}).relay == "inline"
    with pytest.raises(ValueError, match="CONSENT_RELAY"):
        Settings.from_env({"CONSENT_RELAY": "threads"})


async def fresh_service(postgresql_url: str, nats_names: tuple[str, str], relay: str):
    """`consent serve` with CONSENT_RELAY=relay on an emptied database: (the process, its base URL)."""
    await empty_tables(postgresql_url)
    stream, prefix = nats_names
    port = free_port()
    return start_service(postgresql_url, stream, prefix, port, relay), f"http://127.0.0.1:{port}"


def test_the_relay_child_gets_the_relay_settings_and_no_secrets(monkeypatch):
    for name, value in (("CONSENT_MASTER_KEY", "m" * 44), ("CONSENT_ADMIN_KEYS", "admin-key"),
                        ("CONSENT_TOKEN_SIGNING_KEY", "signing-key"), ("CONSENT_DATABASE_URL", "sqlite:///other")):
        monkeypatch.setenv(name, value)
    settings = Settings(database_url="postgresql+asyncpg://db/consent", nats_url="nats://n:4222",
                        nats_stream="S", nats_subject_prefix="p.consent.v1", event_source="/here")
    env = relay_env(settings)
    assert {k: v for k, v in env.items() if k.startswith("CONSENT_")} == {
        "CONSENT_DATABASE_URL": "postgresql+asyncpg://db/consent", "CONSENT_NATS_URL": "nats://n:4222",
        "CONSENT_NATS_STREAM": "S", "CONSENT_NATS_SUBJECT_PREFIX": "p.consent.v1", "CONSENT_EVENT_SOURCE": "/here",
        "CONSENT_NATS_REPLICAS": "1", "CONSENT_DATABASE_FAILOVER_WAIT": "5.0",
        "CONSENT_DATABASE_POOL_TIMEOUT": "5.0", "CONSENT_LOG_FORMAT": "auto"}
    assert env["PATH"] == os.environ["PATH"]


async def test_sigkill_of_the_relay_child_is_survived_and_loses_or_duplicates_nothing(postgresql_url, nats_names):
    stream, prefix = nats_names
    service, base = await fresh_service(postgresql_url, nats_names, "process")
    try:
        await wait_until(lambda: ready(base), what="service ready")
        first = await relay_state(base)
        assert first["mode"] == "process" and first["leader"] is True and first["starts"] == 1
        child = first["pid"]
        assert child != service.pid and alive(child)
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            await http.put("/v1/purposes/marketing", json=MARKETING)

            async def write(n: int) -> None:
                answer = await http.post(f"/v1/subjects/p-{n}/consents", json=grant(n))
                assert answer.status_code == 200, answer.text

            writers = [asyncio.create_task(write(n)) for n in range(300)]
            await asyncio.sleep(0.3)
            os.kill(child, signal.SIGKILL)  # mid-stream: publishes without checkpoints, commits without publishes
            await asyncio.gather(*writers)  # the HTTP process never stopped serving

        replacement = []

        async def restarted() -> bool:
            state = await relay_state(base)
            replacement[:] = [state["pid"]]
            return state["starts"] == 2 and state["pid"] not in (None, child) and state["leader"]

        await wait_until(restarted, timeout=30, what="the serve process to start another relay")
        await wait_until(lambda: ready(base), what="ready again")
        logged = await logged_event_ids(postgresql_url)
        assert len(logged) > 300
        assert_exactly_once(await stream_messages(stream, prefix, expected=len(logged), timeout=20), logged)

        # What ready shows comes from the new child: its position reaches the log's end.
        async def caught_up() -> bool:
            return (await relay_state(base))["published_position"] >= len(logged)

        await wait_until(caught_up, what="the new relay to publish the whole log")
    finally:
        service.terminate()
        service.wait(timeout=15)
    assert not alive(replacement[0])  # stopping the server stopped its relay child first


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL])
async def test_serve_stops_its_relay_child_on_shutdown_and_when_killed(postgresql_url, nats_names, stop):
    service, base = await fresh_service(postgresql_url, nats_names, "process")
    try:
        await wait_until(lambda: ready(base), what="service ready")
        child = (await relay_state(base))["pid"]
        assert alive(child)
        service.send_signal(stop)
        service.wait(timeout=15)

        async def child_gone() -> bool:
            return not alive(child)

        # SIGTERM: shutdown terminates it; SIGKILL: the orphan sees its parent gone and stops.
        await wait_until(child_gone, timeout=10, what=f"relay child gone after {stop.name}")
    finally:
        service.kill()
        service.wait(timeout=10)


async def test_with_relay_off_a_separate_consent_relay_publishes(postgresql_url, nats_names):
    stream, prefix = nats_names
    service, base = await fresh_service(postgresql_url, nats_names, "off")
    env = {**os.environ, "CONSENT_DATABASE_URL": postgresql_url, "CONSENT_NATS_URL": NATS_URL,
           "CONSENT_NATS_STREAM": stream, "CONSENT_NATS_SUBJECT_PREFIX": prefix}
    relays = []
    try:
        await wait_until(lambda: ready(base), what="service ready")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            assert "relay" not in (await http.get("/health/ready")).json()
            await http.put("/v1/purposes/marketing", json=MARKETING)
            for n in range(5):
                assert (await http.post(f"/v1/subjects/o-{n}/consents", json=grant(n))).status_code == 200
        logged = await logged_event_ids(postgresql_url)
        await asyncio.sleep(1.0)
        assert await stream_messages(stream, prefix, expected=0, timeout=0) == []  # nobody relays yet
        # Two relays: the lock lets one publish; the events arrive once.
        relays = [subprocess.Popen([sys.executable, "-m", "consent.cli", "relay"], env=env) for _ in range(2)]
        assert_exactly_once(await stream_messages(stream, prefix, expected=len(logged), timeout=20), logged)
        # The follower may still be starting on a busy machine: stop both only once they handle SIGTERM.
        await wait_until(lambda: _all_handle_sigterm(relays), timeout=20, what="both relays to handle SIGTERM")
    finally:
        for process in [*relays, service]:
            process.terminate()
            process.wait(timeout=15)
    assert all(process.returncode == 0 for process in relays)  # SIGTERM is a clean stop


async def _all_handle_sigterm(processes: list[subprocess.Popen]) -> bool:
    """Linux: bit 15 of SigCgt in /proc/<pid>/status says the process has a SIGTERM handler."""
    def handles(pid: int) -> bool:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
        return bool(caught & (1 << (signal.SIGTERM - 1)))
    return all(handles(process.pid) for process in processes)
