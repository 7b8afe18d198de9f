"""Shared fixtures. Store and HTTP tests run on both real PostgreSQL and the embedded SQLite default.

PostgreSQL: a fresh database per test run, created on the server named by
CONSENT_TEST_POSTGRES_URL (default: the local server, trust auth) and dropped at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import jwt
import pytest
import sqlalchemy as sa
from litestar.testing import AsyncTestClient
from sqlalchemy.ext.asyncio import create_async_engine

from consent.adapters import migrate
from consent.adapters.receipt_keys import new_key_set
from consent.adapters.tables import metadata
from consent.api.app import create_app
from consent.config import Settings

POSTGRES_URL = os.environ.get("CONSENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_KEY = "test-admin-key-0123456789"
USER_TOKEN_SECRET = "test-user-token-secret-0123456789abcdef"
MASTER_KEY = "dGVzdCBtYXN0ZXIga2V5OiAzMiBieXRlcyBsb25nISE="  # base64 of 32 bytes: wraps subjects' data keys
TOKEN_SIGNING_KEY = "test-token-signing-key-0123456789abcdef"
PSEUDONYM_KEY = "test-shared-pseudonym-key-0123456789abcdef"
RECEIPT_KEYS = new_key_set()  # an inline JWKS, made once for the whole run
# The keys every replica on PostgreSQL must share (the service refuses to start there without them), as
# Settings fields and as the environment of a `consent serve` or uvicorn child.
SHARED_KEYS = {"master_key": MASTER_KEY, "token_signing_key": TOKEN_SIGNING_KEY, "pseudonym_key": PSEUDONYM_KEY,
               "receipt_keys": RECEIPT_KEYS}
SHARED_KEYS_ENV = {f"CONSENT_{name.upper()}": value for name, value in SHARED_KEYS.items()}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
BACKENDS = ["sqlite", "postgresql"]


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.current = now or datetime(2026, 3, 3, 12, 0, tzinfo=UTC)

    def now(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += timedelta(**delta)


def user_headers(subject_id: str, ttl: int = 300, secret: str = USER_TOKEN_SECRET) -> dict[str, str]:
    token = jwt.encode({"sub": subject_id, "exp": int(time.time()) + ttl}, secret, algorithm="HS256")
    return {"Authorization": f"Bearer {token}"}


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 30) -> None:
    """Until a started `consent serve` answers /health/ready with 200; fails if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


def tail(output: str, lines: int = 20) -> str:
    """The last lines of a child process's output, for an assertion message that stays readable."""
    kept = output.rstrip().splitlines()[-lines:]
    return "\n".join(kept) if kept else "(no output)"


async def create_postgres_database() -> str:
    name = f"consent_test_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = sa.make_url(POSTGRES_URL)
    return base.set(drivername="postgresql+asyncpg", database=name).render_as_string(hide_password=False)


async def drop_postgres_database(url: str) -> None:
    name = sa.make_url(url).database
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
async def postgresql_url() -> AsyncIterator[str]:
    url = await create_postgres_database()
    await asyncio.to_thread(migrate.upgrade, url)
    yield url
    await drop_postgres_database(url)


@pytest.fixture(scope="session")
async def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    path: Path = tmp_path_factory.mktemp("embedded") / "consent.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(migrate.upgrade, url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
async def scratch_url(request, tmp_path):
    """An empty database of its own on each backend, for migration tests."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'scratch.db'}"
    else:
        url = await create_postgres_database()
        yield url
        await drop_postgres_database(url)


async def empty_tables(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            names = [t.name for t in reversed(metadata.sorted_tables)]
            if engine.dialect.name == "postgresql":
                await conn.execute(sa.text(f"TRUNCATE {', '.join(names)} RESTART IDENTITY"))
            else:
                for name in names:
                    await conn.execute(sa.text(f"DELETE FROM {name}"))
                await conn.execute(sa.text("DELETE FROM sqlite_sequence"))
    finally:
        await engine.dispose()


@pytest.fixture(params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest) -> str:
    """A migrated database on each backend in turn."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def database_url(migrated_url: str) -> str:
    """The same, emptied for this test."""
    await empty_tables(migrated_url)
    return migrated_url


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, admin_keys=(ADMIN_KEY,), user_token_secret=USER_TOKEN_SECRET,
                    **SHARED_KEYS)


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[AsyncTestClient]:
    async with AsyncTestClient(create_app(settings)) as test_client:
        yield test_client


NATS_URL = os.environ.get("CONSENT_TEST_NATS_URL", "nats://127.0.0.1:4222")


@pytest.fixture
async def nats_names() -> AsyncIterator[tuple[str, str]]:
    """A stream name and subject prefix of this test's own, deleted afterwards."""
    stream, prefix = new_nats_names()
    yield stream, prefix
    await delete_nats_stream(stream)


def new_nats_names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"CONSENT_T{tag}", f"t{tag}.consent.v1"


async def delete_nats_stream(stream: str) -> None:
    import nats

    nc = await nats.connect(NATS_URL)
    try:
        await nc.jetstream().delete_stream(stream)
    except Exception:  # noqa: BLE001 - the test may not have created it
        pass
    finally:
        await nc.close()


async def on_app_loop(client: AsyncTestClient, fn, *args):
    """Run `await fn(*args)` on the event loop the test client runs the app on."""
    return await asyncio.to_thread(client.blocking_portal.call, fn, *args)


class LineRecorder(logging.Handler):
    """Keeps every line it is given, as `formatter` writes it."""

    def __init__(self, formatter: logging.Formatter) -> None:
        super().__init__(level=logging.DEBUG)
        self.setFormatter(formatter)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def recording(handler: logging.Handler, logger_name: str = "", level: int = logging.DEBUG) -> Iterator[list[str]]:
    """`handler` on a logger (the root by default) at `level` for a while: the lines it keeps."""
    logger = logging.getLogger(logger_name)
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)
    try:
        yield handler.lines  # type: ignore[attr-defined]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line():
    """Every log line of the whole run, checked at the end for credentials and tokens."""
    with recording(LineRecorder(logging.Formatter("%(name)s %(message)s %(exc_text)s"))) as lines:
        yield
    secrets = (ADMIN_KEY, USER_TOKEN_SECRET, MASTER_KEY, TOKEN_SIGNING_KEY, PSEUDONYM_KEY, "eyJ", "client_secret=")
    # A bearer token, not the challenge of a 401 or 403 (`WWW-Authenticate: Bearer error="insufficient_scope"`,
    # which httpcore's debug lines quote from the SDK's tests).
    token = re.compile(r"Bearer [A-Za-z0-9._~+/=-]{16,}")
    leaks = [line for line in lines if any(secret in line for secret in secrets) or token.search(line)]
    assert not leaks, f"{len(leaks)} log lines carry a credential, e.g. {leaks[0][:300]}"
