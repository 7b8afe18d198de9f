"""The README's five-minute tour, pasted as a new user would: every block runs, in order, against a served
embedded default, and says what the README says it does."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import tail, wait_ready

ROOT = Path(__file__).resolve().parents[2]
README_URL = "http://127.0.0.1:8000"


def tour_blocks() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    tour = re.search(r"^## A five-minute tour\n(.*?)(?=^## )", readme, re.S | re.M)
    assert tour, "README has no five-minute tour"
    return re.findall(r"```sh\n(.*?)```", tour.group(1), re.S)


def exported(block: str) -> dict[str, str]:
    return dict(re.findall(r"\b(CONSENT_[A-Z_]+)=(\S+)", block))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(tmp_path):
    """The tour's first block, `make run` with its exports: the embedded default on a port of its own."""
    server_block = tour_blocks()[0]
    assert "make run" in server_block
    port = free_port()
    env = {**os.environ, **exported(server_block), "CONSENT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
           "CONSENT_LOG_FORMAT": "text"}
    server = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=15)


def test_the_tour_runs_as_pasted_and_answers_as_it_says(served):
    script = "\n".join(tour_blocks()[1:])
    consent = str(Path(sys.executable).parent / "consent")
    script = script.replace(README_URL, served).replace(".venv/bin/consent", consent)
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script + "\n"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    output = done.stdout
    assert done.returncode == 0, tail(done.stderr + output)
    answers = [line for line in output.splitlines() if line.startswith("{")]
    problems = [line for line in answers if '"code"' in line and '"status":' in line]
    assert not problems, f"a block was refused: {problems[0][:300]}"
    assert '"status":"granted"' in output  # the user's state after the grant
    decisions = re.findall(r'"decision":"(\w+)"', output)
    assert decisions == ["partial", "deny"], decisions  # before and after the withdrawal
    assert "scope_not_approved" in output and '"receipts":[{' in output
    (link,) = re.findall(r"http://\S+/privacy-center/enter/[\w-]+", output)
    assert httpx.get(link).status_code == 303, link  # the link opens the user's page, once
