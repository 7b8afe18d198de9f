"""A real `consent serve` for the client to talk to: the embedded default (SQLite, in-process bus) for the
HTTP tests; PostgreSQL and NATS for the JetStream ones (tests/conftest.py does the same for the service).

No __init__.py here: this directory must not become a second `tests` package beside the service's.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

ADMIN_KEY = "client-test-admin-key-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
# Short-lived partner tokens, so that renewal happens within a test.
TOKEN_TTL = 3
POSTGRES_URL = os.environ.get("CONSENT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
NATS_URL = os.environ.get("CONSENT_TEST_NATS_URL", "nats://127.0.0.1:4222")

MARKETING = {"title": "Marketing offers", "description": "Offers by email", "legal_basis": "consent",
             "retention": "P90D", "sale_or_sharing": False}
SCOPES = {"profile.email": "low", "orders.history": "medium"}
ACME = {"name": "Acme Mail", "status": "active", "data_uses": {"marketing": ["profile.email"]}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, server: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/health/ready").status_code == 200:
                return
        assert server.poll() is None and time.monotonic() < deadline, "the server did not come up"
        time.sleep(0.2)


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[str]:
    """`consent serve` on a free port with `env` added to ours: its base URL while it runs."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "consent.cli", "serve", "--port", str(port), *args],
        env={**os.environ, "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_TOKEN_TTL": str(TOKEN_TTL),
             "CONSENT_ACCESS_LOG": "false", **env})
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


class Admin:
    """The governance team's side of the tests: catalog, credentials, consents (written as admin)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.http = httpx.Client(base_url=base, headers=ADMIN, timeout=10)

    def ok(self, response: httpx.Response) -> dict:
        assert response.status_code in (200, 201), response.text
        return response.json()

    def define_catalog(self) -> None:
        self.ok(self.http.put("/v1/purposes/marketing", json=MARKETING))
        for scope, sensitivity in SCOPES.items():
            self.ok(self.http.put(f"/v1/scopes/{scope}", json={"title": scope, "description": scope,
                                                               "sensitivity": sensitivity}))
        self.ok(self.http.put("/v1/partners/acme", json=ACME))

    def credential(self, partner: str = "acme", scopes: list[str] | None = None) -> tuple[str, str]:
        issued = self.ok(self.http.post(f"/v1/partners/{partner}/credentials",
                                        json={"scopes": scopes} if scopes else None))
        return issued["client_id"], issued["client_secret"]

    def consent(self, subject: str, action: str = "grant", partner: str | None = "acme",
                days: int | None = 30) -> int:
        """Records a choice of `subject` about marketing: the log position it was written at."""
        change: dict = {"purpose": "marketing", "partner": partner, "action": action}
        if action == "grant":
            change["scopes"] = ["profile.email"]
            if days is not None:
                change["expires_at"] = (datetime.now(UTC) + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
        answer = self.ok(self.http.post(f"/v1/subjects/{subject}/consents",
                                        json={"changes": [change], "source": "admin"}))
        return answer["position"]


def new_subject() -> str:
    return f"person-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Admin]:
    """One server on the embedded default for every HTTP test, its catalog defined."""
    path: Path = tmp_path_factory.mktemp("client-embedded") / "consent.db"
    with serving({"CONSENT_DATABASE_URL": f"sqlite+aiosqlite:///{path}"}) as base:
        admin = Admin(base)
        admin.define_catalog()
        yield admin
        admin.http.close()


@pytest.fixture(scope="session")
def acme_credential(embedded: Admin) -> tuple[str, str]:
    return embedded.credential()
