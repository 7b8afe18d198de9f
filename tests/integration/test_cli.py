"""The `consent` command as an operator runs it: a child process, its exit status and the lines it prints."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest
from litestar.testing import AsyncTestClient

from consent.adapters import migrate
from consent.api.app import create_app
from consent.config import Settings, SettingsError
from tests.conftest import (
    ADMIN,
    ADMIN_KEY,
    SHARED_KEYS_ENV,
    create_postgres_database,
    drop_postgres_database,
    empty_tables,
    tail,
)
from tests.integration.test_decisions_api import setup_catalog
from tests.integration.test_events_faults import free_port, ready, wait_until

SHARED = ["CONSENT_MASTER_KEY", "CONSENT_TOKEN_SIGNING_KEY", "CONSENT_RECEIPT_KEYS", "CONSENT_PSEUDONYM_KEY"]


def consent(*words: str, cwd: Path, timeout: float = 60, **settings: str) -> subprocess.CompletedProcess:
    """`consent WORDS` in `cwd` with only these CONSENT_* settings (none from the test run's environment)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")} | settings
    return subprocess.run([sys.executable, "-m", "consent.cli", *words], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def read_env_file(text: str) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#")]
    assert all(value[0] == value[-1] == "'" for _, value in pairs), text
    return {name: value[1:-1] for name, value in pairs}


def test_version_comes_from_the_package(tmp_path):
    done = consent("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f"consent {version('consent')}", tail(done.stderr)


def test_help_describes_every_keys_action_and_the_serve_defaults(tmp_path):
    keys = consent("keys", "-h", cwd=tmp_path)
    assert keys.returncode == 0, tail(keys.stderr)
    for action in ("init", "new-receipt-key", "rewrap"):
        assert f"\n    {action}" in keys.stdout, keys.stdout
    serve = consent("serve", "-h", cwd=tmp_path).stdout
    assert all(default in serve for default in ("(default: 127.0.0.1)", "(default: 8000)", "(default: 1)")), serve
    assert "CONSENT_ALLOW_EPHEMERAL_KEYS" in serve and "consent keys init" in serve


async def test_keys_init_makes_keys_that_start_the_service_on_postgresql(tmp_path, postgresql_url):
    printed = consent("keys", "init", cwd=tmp_path)
    assert printed.returncode == 0, tail(printed.stderr)
    values = read_env_file(printed.stdout)
    as_json = json.loads(consent("keys", "init", "--format", "json", cwd=tmp_path).stdout)
    assert set(values) == set(as_json) >= {"CONSENT_ADMIN_KEYS", *SHARED}
    assert all(values[name] != as_json[name] for name in values)  # fresh each time
    # The .env form reads back the same in a shell (`set -a; . ./.env`), JWKS braces and quotes included.
    (tmp_path / ".env").write_text(printed.stdout)
    shell = subprocess.run(["sh", "-c", "set -a; . ./.env; printenv CONSENT_RECEIPT_KEYS"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert shell.stdout.strip() == values["CONSENT_RECEIPT_KEYS"], tail(shell.stderr)

    await empty_tables(postgresql_url)
    settings = Settings.from_env(values | {"CONSENT_DATABASE_URL": postgresql_url,  # the test's key too
                                           "CONSENT_ADMIN_KEYS": f"{values['CONSENT_ADMIN_KEYS']},{ADMIN_KEY}"})
    assert settings.missing_shared_keys() == []
    admin = {"Authorization": f"Bearer {values['CONSENT_ADMIN_KEYS']}"}
    async with AsyncTestClient(create_app(settings)) as client:
        await setup_catalog(client)
        # The master key is there: evidence is accepted (without it, 422 master_key_missing).
        answer = await client.post("/v1/subjects/u-1/consents", headers=admin, json={
            "changes": [{"purpose": "marketing", "action": "grant"}], "evidence": {"collection_point": "signup"}})
        assert answer.status_code == 200, answer.text
        published = (await client.get("/.well-known/jwks.json")).json()["keys"]
        assert [key["kid"] for key in published] == [json.loads(values["CONSENT_RECEIPT_KEYS"])["keys"][0]["kid"]]


def test_keys_init_writes_a_private_file_and_never_overwrites_one(tmp_path):
    target = tmp_path / ".env"
    done = consent("keys", "init", "--write", str(target), cwd=tmp_path)
    assert done.returncode == 0, tail(done.stderr)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    written = target.read_text()
    assert set(read_env_file(written)) >= set(SHARED)
    assert not any(value in done.stdout for value in read_env_file(written).values())  # no secret on the screen

    again = consent("keys", "init", "--write", str(target), cwd=tmp_path)
    assert again.returncode == 1 and "exists" in again.stderr, tail(again.stderr)
    assert target.read_text() == written


def test_serve_refuses_several_workers_without_postgresql_and_nats(tmp_path, postgresql_url):
    embedded = consent("serve", "--workers", "2", cwd=tmp_path, timeout=30)
    assert embedded.returncode == 2, tail(embedded.stderr)
    assert "--workers" in embedded.stderr and "CONSENT_NATS_URL" in embedded.stderr, tail(embedded.stderr)
    assert list(tmp_path.iterdir()) == []  # no SQLite file was made
    without_nats = consent("serve", "--workers", "2", cwd=tmp_path, timeout=30, CONSENT_DATABASE_URL=postgresql_url,
                           **SHARED_KEYS_ENV)
    assert without_nats.returncode == 2 and "CONSENT_NATS_URL" in without_nats.stderr, tail(without_nats.stderr)


@pytest.mark.parametrize("command", [["audit", "verify"], ["projections", "rebuild"], ["keys", "rewrap"],
                                     ["privacy-center-link", "ann"]])
def test_a_command_on_a_missing_embedded_database_says_so_and_creates_nothing(tmp_path, command):
    done = consent(*command, cwd=tmp_path)
    assert done.returncode == 1, tail(done.stderr)
    assert "does not exist" in done.stderr and "consent db upgrade" in done.stderr, tail(done.stderr)
    assert "Traceback" not in done.stderr, tail(done.stderr)
    assert list(tmp_path.iterdir()) == []


async def test_audit_verify_on_an_unmigrated_postgresql_database_asks_for_the_migration(tmp_path):
    url = await create_postgres_database()
    try:
        done = await asyncio.to_thread(consent, "audit", "verify", cwd=tmp_path, CONSENT_DATABASE_URL=url)
    finally:
        await drop_postgres_database(url)
    assert done.returncode == 1 and "run `consent db upgrade`" in done.stderr, tail(done.stderr)
    assert "Traceback" not in done.stderr, tail(done.stderr)


@pytest.mark.parametrize("command", [["serve"], ["audit", "verify"], ["db", "upgrade"]])
def test_a_bad_setting_stops_any_command_with_one_line_naming_it(tmp_path, command):
    done = consent(*command, cwd=tmp_path, CONSENT_TOKEN_TTL="abc", CONSENT_FAST_DECISIONS="false")
    assert done.returncode == 2, tail(done.stderr)
    assert done.stderr.strip() == "consent: CONSENT_TOKEN_TTL must be a whole number of seconds >= 1, not 'abc'", \
        tail(done.stderr)
    assert list(tmp_path.iterdir()) == []


async def test_postgresql_without_the_shared_keys_does_not_start(tmp_path, postgresql_url):
    only_master_key = {"CONSENT_MASTER_KEY": SHARED_KEYS_ENV["CONSENT_MASTER_KEY"]}
    done = await asyncio.to_thread(consent, "serve", cwd=tmp_path, timeout=30, CONSENT_DATABASE_URL=postgresql_url,
                                   CONSENT_ADMIN_KEYS=ADMIN_KEY, **only_master_key)
    assert done.returncode == 2, tail(done.stderr)
    line = done.stderr.strip()
    assert "\n" not in line and "consent keys init" in line and "CONSENT_ALLOW_EPHEMERAL_KEYS=1" in line, tail(line)
    assert all(name in line for name in SHARED[1:]) and "CONSENT_MASTER_KEY" not in line, line
    # An app made in code refuses the same at start.
    with pytest.raises(ExceptionGroup) as refused:  # raised by the start-up task group of the test client
        async with AsyncTestClient(create_app(Settings(database_url=postgresql_url, admin_keys=(ADMIN_KEY,)))):
            pass
    assert refused.group_contains(SettingsError, match="CONSENT_TOKEN_SIGNING_KEY")


async def test_ephemeral_keys_allowed_explicitly_start_with_a_warning(tmp_path, postgresql_url):
    port, log = free_port(), tmp_path / "serve.log"
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")} | {
        "CONSENT_DATABASE_URL": postgresql_url, "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_ALLOW_EPHEMERAL_KEYS": "yes"}
    with log.open("w") as stderr:
        service = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], cwd=tmp_path,
                                   env=env, stderr=stderr)
    try:
        try:
            await wait_until(lambda: ready(f"http://127.0.0.1:{port}"), timeout=30, what="the service to be ready")
        except AssertionError as error:
            raise AssertionError(f"{error}; its stderr ends:\n{tail(log.read_text())}") from None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN) as http:
            assert (await http.get("/v1/purposes")).status_code == 200
    finally:
        service.terminate()
        service.wait(timeout=15)
    warning = next((line for line in log.read_text().splitlines() if "CONSENT_ALLOW_EPHEMERAL_KEYS" in line), "")
    assert all(name in warning for name in SHARED), tail(log.read_text())


async def test_privacy_center_link_prints_a_link_the_server_opens_once(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/consent.db"
    await asyncio.to_thread(migrate.upgrade, url)
    printed = consent("privacy-center-link", "ann", cwd=tmp_path, CONSENT_DATABASE_URL=url,
                      CONSENT_PUBLIC_URL="https://consent.example")
    assert printed.returncode == 0, tail(printed.stderr)
    link = printed.stdout.strip()
    assert link.startswith("https://consent.example/privacy-center/enter/")
    async with AsyncTestClient(create_app(Settings(database_url=url, admin_keys=(ADMIN_KEY,)))) as client:
        path = link.removeprefix("https://consent.example")
        assert (await client.get(path, follow_redirects=False)).status_code == 303
        assert (await client.get(path, follow_redirects=False)).status_code == 410
    refused = consent("privacy-center-link", "x" * 129, cwd=tmp_path, CONSENT_DATABASE_URL=url)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


async def test_catalog_export_plan_and_apply_against_a_server(tmp_path):
    port = free_port()
    env = {"CONSENT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/consent.db", "CONSENT_ADMIN_KEYS": ADMIN_KEY}
    server = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], cwd=tmp_path,
                              env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = {"CONSENT_URL": f"http://127.0.0.1:{port}", "CONSENT_ADMIN_KEY": ADMIN_KEY}
    example = str(Path(__file__).resolve().parents[2] / "examples" / "catalog.yaml")
    try:
        await wait_until(lambda: ready(f"http://127.0.0.1:{port}"), timeout=30, what="the server")
        planned = consent("catalog", "plan", example, cwd=tmp_path, **client)
        assert planned.returncode == 2, tail(planned.stderr)  # something would change
        assert "+ purpose marketing" in planned.stdout and "5 to change, 0 unchanged" in planned.stdout
        applied = consent("catalog", "apply", example, cwd=tmp_path, **client)
        assert applied.returncode == 0, tail(applied.stderr)
        again = consent("catalog", "plan", example, cwd=tmp_path, **client)
        assert again.returncode == 0 and "0 to change, 5 unchanged" in again.stdout, again.stdout
        exported = consent("catalog", "export", cwd=tmp_path, **client)
        (tmp_path / "exported.yaml").write_text(exported.stdout)
        assert consent("catalog", "plan", "exported.yaml", cwd=tmp_path, **client).returncode == 0
        (tmp_path / "bad.yaml").write_text("purposes: {x: {title: X}}")
        bad = consent("catalog", "plan", "bad.yaml", cwd=tmp_path, **client)
        assert bad.returncode == 1 and "validation_failed" in bad.stderr
        no_key = consent("catalog", "plan", example, cwd=tmp_path, CONSENT_URL=client["CONSENT_URL"])
        assert no_key.returncode == 1 and "CONSENT_ADMIN_KEY" in no_key.stderr
    finally:
        server.terminate()
        server.wait(timeout=15)
