"""Property-based API testing against the served OpenAPI document (schemathesis, fixed budget).

A real server on the embedded default with admin credentials; every operation is
generated against: no 5xx, no status, content type or body outside the document.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from tests.conftest import ADMIN, ADMIN_KEY
from tests.integration.test_events_faults import free_port, ready, wait_until

EXAMPLES = 30
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"


async def test_schemathesis_finds_no_5xx_and_no_schema_violation():
    folder = tempfile.mkdtemp(prefix="consent-fuzz-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_DATABASE_URL=f"sqlite+aiosqlite:///{folder}/consent.db", CONSENT_ADMIN_KEYS=ADMIN_KEY,
               CONSENT_USER_TOKEN_SECRET="fuzz-secret-0123456789abcdef")
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "consent.api.app:create_app", "--factory",
                               "--port", str(port), "--log-level", "warning"], env=env)
    try:
        await wait_until(lambda: ready(base), what="server ready")
        async with httpx.AsyncClient(base_url=base, headers=ADMIN) as http:
            # A little catalog, so that generated requests also get past validation.
            await http.put("/v1/scopes/orders", json={"title": "O", "description": "", "sensitivity": "low"})
            await http.put("/v1/purposes/marketing", json={
                "title": "M", "description": "d", "legal_basis": "consent", "retention": "P30D"})
            await http.put("/v1/partners/acme", json={
                "name": "Acme", "status": "active", "data_uses": {"marketing": ["orders"]}})
        command = [str(Path(sys.executable).with_name("schemathesis")), "run", f"{base}/schema/openapi.json",
                   "-H", f"Authorization: Bearer {ADMIN_KEY}", "--max-examples", str(EXAMPLES), "-c", CHECKS,
                   "--phases", "examples,coverage,fuzzing", "--seed", "20261124", "--no-color"]
        run = subprocess.run(command, capture_output=True, text=True, timeout=170, cwd=folder)
        assert run.returncode == 0, run.stdout[-6000:]
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
