"""Request ids on every answer, and one JSON access line a request that names no subject, token or query."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient

from consent.api.app import create_app
from consent.logs import ACCESS_LOGGER, JsonFormatter
from tests.conftest import ADMIN, ADMIN_KEY, LineRecorder, recording, tail, user_headers
from tests.integration.test_decisions_api import grant, partner_headers, setup_catalog
from tests.integration.test_events_faults import free_port, ready, wait_until

SUBJECT = "person-0815"
MADE = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")  # a request id this service made


@pytest.fixture(params=[True, False], ids=["thin", "litestar"])
def settings(settings, request):
    return msgspec.structs.replace(settings, fast_decisions=request.param, fast_writes=request.param)


@pytest.fixture
def access_lines():
    """The access lines as `consent serve` writes them (JSON)."""
    with recording(LineRecorder(JsonFormatter()), ACCESS_LOGGER, logging.INFO) as lines:
        yield lines


def last(lines: list[str]) -> dict:
    return json.loads(lines[-1])


async def test_every_answer_carries_a_request_id_and_its_access_line(client, access_lines):
    await setup_catalog(client)
    acme, _ = await partner_headers(client, "acme")
    await grant(client, SUBJECT, "acme")
    question = {"subject_id": SUBJECT, "purpose": "marketing", "scopes": ["orders"]}

    given = await client.post("/v1/decisions", headers={**acme, "X-Request-Id": "trace.42_a-B"}, json=question)
    assert given.status_code == 200 and given.headers["x-request-id"] == "trace.42_a-B"
    line = last(access_lines)
    assert line == {**line, "level": "INFO", "logger": ACCESS_LOGGER, "request_id": "trace.42_a-B",
                    "route": "/v1/decisions", "method": "POST", "status": 200, "partner": "acme"}
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] > 0 and line["time"].endswith("Z")

    # Made here when missing or malformed; on errors too, and on paths no route matches.
    for headers, path, status in (({}, f"/v1/subjects/{SUBJECT}/consents", 401),
                                  ({"X-Request-Id": "has space"}, "/v1/decisions", 401),
                                  ({"X-Request-Id": "x" * 65}, f"/v1/subjects/{SUBJECT}/consents", 401),
                                  ({"X-Request-Id": ""}, "/v1/decisions", 401),
                                  ({"X-Request-Id": "a/b"}, f"/nowhere/{SUBJECT}", 404)):
        answer = await client.post(path, headers=headers, json=question)
        assert answer.status_code == status
        assert MADE.fullmatch(answer.headers["x-request-id"]), answer.headers
        assert last(access_lines)["request_id"] == answer.headers["x-request-id"]
        assert last(access_lines)["status"] == status and "partner" not in last(access_lines)
    assert last(access_lines)["route"] == "unmatched"
    made = [json.loads(line)["request_id"] for line in access_lines if MADE.fullmatch(json.loads(line)["request_id"])]
    assert len(made) == len(set(made))  # never the same twice

    written = await client.post(f"/v1/subjects/{SUBJECT}/consents?note=query-canary", headers=user_headers(SUBJECT),
                                json={"changes": [{"purpose": "marketing", "action": "withdraw"}]})
    assert written.status_code == 200 and MADE.fullmatch(written.headers["x-request-id"])
    assert last(access_lines)["route"] == "/v1/subjects/{subject_id}/consents"
    too_big = await client.post("/v1/decisions", headers=acme, content=b"x" * 2_000_000)
    assert too_big.status_code == 413 and too_big.headers["x-request-id"]
    for line in access_lines:
        assert SUBJECT not in line and "query-canary" not in line and "Bearer" not in line and "eyJ" not in line


async def test_no_access_line_when_turned_off_but_still_a_request_id(settings, access_lines):
    async with AsyncTestClient(create_app(msgspec.structs.replace(settings, access_log=False))) as client:
        answer = await client.get("/v1/purposes", headers={**ADMIN, "X-Request-Id": "abc"})
    assert answer.headers["x-request-id"] == "abc"
    assert access_lines == []


async def test_consent_serve_writes_json_lines_uvicorns_too(tmp_path):
    port, log = free_port(), tmp_path / "serve.log"
    env = {name: value for name, value in os.environ.items() if not name.startswith("CONSENT_")} | {
        "CONSENT_ADMIN_KEYS": ADMIN_KEY}  # the embedded default: SQLite in tmp_path
    with log.open("w") as stderr:  # not a terminal: JSON
        service = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)],
                                   cwd=tmp_path, env=env, stderr=stderr)
    try:
        await wait_until(lambda: ready(f"http://127.0.0.1:{port}"), timeout=30, what="the service to be ready")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            answer = await http.get(f"/v1/subjects/{SUBJECT}/consents", headers={"X-Request-Id": "from-test"})
            assert answer.status_code == 401 and answer.headers["x-request-id"] == "from-test"
    finally:
        service.terminate()
        service.wait(timeout=15)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON
    messages = {line["message"] for line in lines}
    assert "Application startup complete." in messages, tail(log.read_text())  # uvicorn's own
    assert lines[-1]["message"].startswith("Finished server process"), tail(log.read_text())  # nothing lost at exit
    access = [line for line in lines if line["logger"] == ACCESS_LOGGER and line["request_id"] == "from-test"]
    assert access and access[0]["route"] == "/v1/subjects/{subject_id}/consents" and access[0]["status"] == 401
    assert SUBJECT not in log.read_text()
