#!/usr/bin/env python3
"""Benchmark of the consent service: decisions, batch decisions and consent writes against
baselines measured in the same run (see shared PERFORMANCE.md and the decisions issue).

    .venv/bin/python bench/bench.py                      # fresh database + one server, all runs
    .venv/bin/python bench/bench.py --subjects 2000 --duration 5
    .venv/bin/python bench/bench.py --url http://127.0.0.1:8000 --admin-key KEY [--skip-seed]

By default it creates a PostgreSQL database `consent_bench_<random>` on --postgres, migrates it,
starts one uvicorn worker (uvloop, httptools) on a free port, seeds a catalog and --subjects
subjects, then runs wrk (one thread, Lua scripts) against it and a raw asyncpg write baseline
in this process. Everything it started or created is stopped or dropped at the end, also on
error or Ctrl-C. With --url it targets a running server and creates only seeded data (plus a
scratch database for the asyncpg baseline, dropped at the end).

Runs (--only takes a comma list of these names):
  ceiling    GET /health/live at --connections (the framework's ceiling)
  decisions  POST /v1/decisions at --connections (throughput)
  latency    POST /v1/decisions at --latency-connections (p50/p99 below saturation)
  batch      POST /v1/decisions/batch, --batch-size items, at --batch-connections
  writes     POST /v1/subjects/{id}/consents, one change a request, at --write-connections
  baseline   raw asyncpg: BEGIN; INSERT event; UPSERT state; COMMIT at --baseline-connections

Exit status: 0 when every run completed without errors (whether or not targets were met),
1 when some request failed (non-2xx, socket errors) or the bench broke, 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import resource
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections import Counter
from pathlib import Path
from typing import Any

try:
    import asyncpg
    import httpx
except ImportError as missing:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"bench needs asyncpg and httpx in this interpreter ({missing}); "
             f"install the project with its dev extras: pip install -e '.[dev]'")

RUNS = ("ceiling", "decisions", "latency", "batch", "writes", "baseline")
TARGETS = {
    "decisions_vs_ceiling": 0.7,     # single decisions / GET /health/live, same connections
    "decision_p99_ms": 5.0,          # at --latency-connections (8)
    "batch_decisions_per_s": 50_000,  # per server process
    "writes_vs_baseline": 0.5,       # consent writes / raw asyncpg transactions
    "write_p99_ms": 50.0,
}
PARTNER = "acme"  # the partner whose token drives the decision runs
WRITE_KEY = {"purpose": "ad_sharing", "partner": "initech", "scopes": ["profile.email"]}  # never seeded

# --- the catalog -------------------------------------------------------------------------------

SCOPES = {
    "profile": "low", "profile.email": "medium", "profile.phone": "medium",
    "orders": "low", "orders.history": "medium", "location": "high", "location.precise": "high",
}
PURPOSES = {
    "marketing": {"title": "Marketing", "description": "Offers by email and in the app",
                  "legal_basis": "consent", "retention": "P2Y"},
    "analytics": {"title": "Product analytics", "description": "How the product is used",
                  "legal_basis": "legitimate_interest", "retention": "P90D"},
    "fulfilment": {"title": "Order fulfilment", "description": "Deliver what was ordered",
                   "legal_basis": "contract", "retention": "P7Y"},
    "ad_sharing": {"title": "Advertising partners", "description": "Share data with ad partners",
                   "legal_basis": "consent", "retention": "P180D", "sale_or_sharing": True},
}
PARTNERS = {
    "acme": {"name": "Acme Ads", "status": "active", "data_uses": {
        "marketing": ["profile.email", "orders.history"], "analytics": ["orders", "location"],
        "ad_sharing": ["profile"], "fulfilment": ["profile", "orders"]}},
    "globex": {"name": "Globex Logistics", "status": "active", "data_uses": {
        "marketing": ["profile"], "analytics": ["orders.history"], "fulfilment": ["orders"]}},
    "initech": {"name": "Initech Insights", "status": "sandbox", "data_uses": {
        "ad_sharing": ["profile.email", "location"], "analytics": ["location.precise"]}},
}
# What the decision runs ask as acme, with weights: permits, partials, denials of several reasons.
QUESTIONS = [
    (30, "marketing", ["profile.email"]),
    (20, "marketing", ["profile.email", "orders.history"]),
    (15, "analytics", ["orders"]),
    (5, "analytics", ["location", "orders.history"]),
    (10, "ad_sharing", ["profile"]),
    (10, "fulfilment", ["orders"]),
    (5, "marketing", ["profile.phone"]),                       # scope_not_approved
    (5, "marketing", ["profile.email", "location.precise"]),   # partial at best
]
EVIDENCE = [
    {"collection_point": "signup-form", "text_shown": "Send me offers by email (v3)"},
    {"collection_point": "app-settings", "text_shown": "Privacy choices"},
    {"collection_point": "cookie-banner", "text_shown": "We and our partners use your data to..."},
]


def subject_width(subjects: int) -> int:
    return max(6, len(str(subjects - 1)))


def subject_id(prefix: str, width: int, i: int) -> str:
    return f"{prefix}{i:0{width}d}"


def subject_plan(rng: random.Random, now: dt.datetime) -> list[list[dict[str, Any]]]:
    """One subject's consent requests (each a list of changes): mixed grants, some partner grants,
    some expiring, objections to the legitimate-interest purpose, and later withdrawals."""
    first: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    if rng.random() < 0.55:
        change: dict[str, Any] = {"purpose": "marketing", "partner": None, "scopes": None, "action": "grant"}
        if rng.random() < 0.25:
            change["expires_at"] = (now + dt.timedelta(days=rng.randint(30, 365))).isoformat()
        first.append(change)
        if rng.random() < 0.2:
            later.append({"purpose": "marketing", "partner": None, "action": "withdraw"})
    if rng.random() < 0.35:
        scopes = rng.choice([["profile.email"], ["orders.history"], ["profile.email", "orders.history"]])
        change = {"purpose": "marketing", "partner": "acme", "scopes": scopes, "action": "grant"}
        if rng.random() < 0.15:
            change["expires_at"] = (now + dt.timedelta(days=rng.randint(1, 90))).isoformat()
        first.append(change)
        if len(scopes) == 2 and rng.random() < 0.3:
            later.append({"purpose": "marketing", "partner": "acme", "scopes": ["orders.history"],
                          "action": "withdraw"})
    if rng.random() < 0.25:
        first.append({"purpose": "ad_sharing", "partner": "acme", "scopes": ["profile"], "action": "grant"})
        if rng.random() < 0.15:
            later.append({"purpose": "ad_sharing", "partner": "acme", "action": "withdraw"})
    if rng.random() < 0.15:
        first.append({"purpose": "marketing", "partner": "globex", "scopes": ["profile"], "action": "grant"})
    if rng.random() < 0.08:
        first.append({"purpose": "analytics", "partner": None, "action": "object"})
    elif rng.random() < 0.05:
        first.append({"purpose": "analytics", "partner": "acme", "action": "object"})
    if not first:
        first.append({"purpose": "marketing", "partner": "globex", "scopes": ["profile"], "action": "grant"})
    return [first] + ([later] if later else [])


# --- small helpers -----------------------------------------------------------------------------

def log(message: str = "") -> None:
    print(message, flush=True)


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_urls(base: str, database: str) -> tuple[str, str]:
    """(asyncpg DSN, SQLAlchemy URL) for `database` on the server of `base`."""
    parts = urllib.parse.urlsplit(base)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("postgresql", "postgres"):
        raise SystemExit(f"--postgres must be a postgresql:// URL, not {base!r}")
    plain = urllib.parse.urlunsplit(("postgresql", parts.netloc, "/" + database, parts.query, ""))
    return plain, "postgresql+asyncpg" + plain[len("postgresql"):]


def lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def service_revision() -> str | None:
    """The commit of the service under test, and whether its code differs from it (read-only git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", "consent", "migrations"],
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + (" + uncommitted changes in consent/ or migrations/" if dirty.stdout.strip() else "")


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "-v"], capture_output=True, text=True)
    first = (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr).strip() else "wrk"
    return first.split(" Copyright")[0].strip()


def listening_pid(port: int) -> int | None:
    """The process listening on this local TCP port, when it is on this machine and visible."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(entry.name)
    return None


class CpuMeter:
    """Where the CPU went during a run, in percent of one core: the server process, the PostgreSQL
    backends serving the bench database, wrk (a reaped child), this process, and everything else
    on the machine (other people's work skews every figure: it is reported, not hidden)."""

    def __init__(self, server_pid: int | None, database: str | None) -> None:
        self.server_pid = server_pid
        self.database = database
        self.ticks = os.sysconf("SC_CLK_TCK")
        self.cores = os.cpu_count() or 1

    @staticmethod
    def _ticks(pid: int | str) -> int | None:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return None

    def _postgres(self) -> dict[str, int]:
        """CPU ticks of the PostgreSQL processes working for the bench database, by pid."""
        if self.database is None:
            return {}
        marker = f" {self.database} ".encode()
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            # Backends of the bench database, and the shared background processes (WAL writer,
            # checkpointer, ...), whose command lines name no client: "user db host(port) state".
            if cmdline.startswith(b"postgres: ") and (marker in cmdline or (
                    b"(" not in cmdline and b"[local]" not in cmdline and b"autovacuum worker" not in cmdline)):
                ticks = self._ticks(entry.name)
                if ticks is not None:
                    found[entry.name] = ticks
        return found

    @staticmethod
    def _machine() -> tuple[int, int]:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)
        return sum(values), idle

    @staticmethod
    def _rusage(who: int) -> float:
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.server0 = self._ticks(self.server_pid) if self.server_pid else None
        self.pg0 = self._postgres()
        self.machine0 = self._machine()
        self.children0 = self._rusage(resource.RUSAGE_CHILDREN)
        self.self0 = self._rusage(resource.RUSAGE_SELF)

    def stop(self) -> dict[str, float | None]:
        wall = time.monotonic() - self.t0
        server = self._ticks(self.server_pid) if self.server_pid else None
        pg = self._postgres()
        total, idle = self._machine()
        children = self._rusage(resource.RUSAGE_CHILDREN) - self.children0
        own = self._rusage(resource.RUSAGE_SELF) - self.self0
        pct = lambda seconds: round(100 * seconds / wall, 1)  # noqa: E731
        dtotal = total - self.machine0[0]
        busy = self.cores * (1 - (idle - self.machine0[1]) / dtotal) * wall if dtotal else None
        server_s = (server - self.server0) / self.ticks if server is not None and self.server0 is not None else None
        pg_s = sum(t - self.pg0.get(pid, 0) for pid, t in pg.items()) / self.ticks if self.database else None
        known = children + own + (server_s or 0) + (pg_s or 0)
        return {
            "server_core_pct": None if server_s is None else pct(server_s),
            "postgres_core_pct": None if pg_s is None else pct(pg_s),
            "wrk_core_pct": pct(children),
            "bench_core_pct": pct(own),
            "machine_busy_pct": None if busy is None else round(100 * busy / (wall * self.cores), 1),
            "other_core_pct": None if busy is None else max(0.0, pct(busy - known)),
        }


# --- wrk and its Lua scripts ---------------------------------------------------------------------

LUA_COMMON = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
statuses = {}
function response(status, headers, body)
  if status < 200 or status > 299 then statuses[status] = (statuses[status] or 0) + 1 end
end
function done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end end
  end
  local parts = {}
  for code, n in pairs(counts) do table.insert(parts, string.format('"%d":%d', code, n)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"mean":%.1f,"max":%d},"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.mean, latency.max, table.concat(parts, ",")))
end
"""


def lua_prelude(args: argparse.Namespace, seed: int) -> str:
    return (f"local N = {args.subjects}\nlocal PREFIX = {lua_str(args.subject_prefix)}\n"
            f"local FMT = {lua_str('%s%0' + str(subject_width(args.subjects)) + 'd')}\n"
            f"function init(args) math.randomseed({seed} + (tonumber(args[1]) or 0)) end\n"
            "local function sid(i) return string.format(FMT, PREFIX, i) end\n")


def lua_questions() -> str:
    """A weighted table of body tails `","purpose":...,"scopes":[...]}` for the decision scripts."""
    rows = []
    for weight, purpose, scopes in QUESTIONS:
        tail = '",' + json.dumps({"purpose": purpose, "scopes": scopes}, separators=(",", ":"))[1:]
        rows.extend([lua_str(tail)] * weight)
    return "local QUESTIONS = {" + ",".join(rows) + "}\nlocal NQ = #QUESTIONS\n"


def lua_ceiling(args: argparse.Namespace, _token: str) -> str:
    return ('local req = wrk.format("GET", "/health/live")\n'
            "function request() return req end\n" + LUA_COMMON)


def lua_decisions(args: argparse.Namespace, token: str) -> str:
    return (lua_prelude(args, args.seed + 11) + lua_questions() +
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = {lua_str("Bearer " + token)}\n'
            "function request()\n"
            "  local body = '{\"subject_id\":\"' .. sid(math.random(0, N - 1)) .. QUESTIONS[math.random(NQ)]\n"
            '  return wrk.format(nil, "/v1/decisions", nil, body)\nend\n' + LUA_COMMON)


def lua_batch(args: argparse.Namespace, token: str) -> str:
    # Distinct bodies built once per thread: building 1,000 items per request would cost wrk more
    # than it costs the server to parse them.
    return (lua_prelude(args, args.seed + 23) + lua_questions() +
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = {lua_str("Bearer " + token)}\n'
            f"local SIZE, POOL = {args.batch_size}, 64\n"
            "local bodies = nil\n"
            "local function build()\n"
            "  bodies = {}\n"
            "  for b = 1, POOL do\n"
            "    local items = {}\n"
            "    for k = 1, SIZE do\n"
            "      items[k] = '{\"subject_id\":\"' .. sid(math.random(0, N - 1)) .. QUESTIONS[math.random(NQ)]\n"
            "    end\n"
            "    local body = '{\"items\":[' .. table.concat(items, ',') .. ']}'\n"
            "    bodies[b] = wrk.format(nil, \"/v1/decisions/batch\", nil, body)\n"
            "  end\nend\n"
            "function request()\n  if bodies == nil then build() end\n  return bodies[math.random(POOL)]\nend\n"
            + LUA_COMMON)


def lua_writes(args: argparse.Namespace, admin_key: str) -> str:
    grant = json.dumps({"changes": [{**WRITE_KEY, "action": "grant"}], "source": "web",
                        "evidence": {"collection_point": "bench-preferences",
                                     "text_shown": "Share my email with Initech for advertising"}},
                       separators=(",", ":"))
    withdraw = json.dumps({"changes": [{"purpose": WRITE_KEY["purpose"], "partner": WRITE_KEY["partner"],
                                        "action": "withdraw"}], "source": "app",
                           "evidence": {"collection_point": "app-settings", "text_shown": "Privacy choices"}},
                          separators=(",", ":"))
    # Half the requests withdraw the oldest grant this script gave (long answered by then), half
    # grant on a subject that holds no grant from it and was not touched in the last 4 x connections
    # requests: every request is a real change (an event, a projection update, a commit) and two
    # requests on one subject are almost never in flight together.
    return (lua_prelude(args, args.seed + 37) +
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = {lua_str("Bearer " + admin_key)}\n'
            f"local GRANT, WITHDRAW = {lua_str(grant)}, {lua_str(withdraw)}\n"
            f"local GAP = {4 * args.write_connections}\n"
            "local queue, head, tail = {}, 1, 0   -- granted subjects, oldest first\n"
            "local granted, touched, count = {}, {}, 0\n"
            "function request()\n"
            "  count = count + 1\n"
            "  local i, body\n"
            "  local held = tail - head + 1\n"
            "  if (held > GAP and math.random() < 0.5) or held >= N / 2 then\n"
            "    i = queue[head]; queue[head] = nil; head = head + 1\n"
            "    granted[i] = nil\n"
            "    body = WITHDRAW\n"
            "  else\n"
            "    repeat i = math.random(0, N - 1)\n"
            "    until granted[i] == nil and (touched[i] == nil or count - touched[i] > GAP or N <= 8 * GAP)\n"
            "    tail = tail + 1; queue[tail] = i; granted[i] = true\n"
            "    body = GRANT\n"
            "  end\n"
            "  touched[i] = count\n"
            '  return wrk.format(nil, "/v1/subjects/" .. sid(i) .. "/consents", nil, body)\nend\n'
            + LUA_COMMON)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base_url = args.url.rstrip("/") if args.url else None
        self.admin_key = args.admin_key
        self.server: subprocess.Popen | None = None
        self.server_log: Path | None = None
        self.database: str | None = None
        self.database_dsn: str | None = None
        self.wrk_proc: asyncio.subprocess.Process | None = None
        self.tmp = Path(tempfile.mkdtemp(prefix="consent-bench-"))
        self.results: dict[str, Any] = {}
        self.problems: list[str] = []
        self.credential: tuple[str, str] | None = None  # (client_id, client_secret)
        self.width = subject_width(args.subjects)
        self.wrk_runs = 0  # each wrk run draws its own random sequence
        self.server_pid: int | None = None  # ours, or found by the --url port when it is local

    # --- infrastructure --------------------------------------------------------------------

    async def create_database(self) -> None:
        name = f"consent_bench_{secrets.token_hex(4)}"
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        self.database = name
        self.database_dsn, self.database_url = postgres_urls(self.args.postgres, name)
        log(f"database: created {name}")

    async def drop_database(self) -> None:
        if self.database is None:
            return
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            log(f"database: dropped {self.database}")
            self.database = None
        finally:
            await conn.close()

    def migrate(self) -> None:
        env = {**os.environ, "CONSENT_DATABASE_URL": self.database_url}
        started = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "consent.cli", "db", "upgrade"], env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"consent db upgrade failed:\n{done.stdout}{done.stderr}")
        log(f"database: migrated in {time.monotonic() - started:.1f} s")

    async def start_server(self) -> None:
        port = free_port()
        self.admin_key = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
        env.update(CONSENT_DATABASE_URL=self.database_url, CONSENT_ADMIN_KEYS=self.admin_key,
                   CONSENT_TOKEN_SIGNING_KEY=secrets.token_urlsafe(32), CONSENT_PARTNER_RATE_LIMIT="0")
        uvicorn = Path(sys.executable).parent / "uvicorn"
        launcher = [str(uvicorn)] if uvicorn.exists() else [sys.executable, "-m", "uvicorn"]
        command = [*launcher,
                   "consent.api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"]
        self.server_command = command
        self.server_log = Path(self.args.server_log) if self.args.server_log else self.tmp / "server.log"
        with open(self.server_log, "wb") as out:
            # Its own session: a Ctrl-C reaches the bench, which then stops it and drops the database.
            self.server = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if self.server.poll() is not None:
                    raise RuntimeError(f"server exited with {self.server.returncode}:\n{self.server_log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{self.base_url}/health/ready")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after 60 s:\n{self.server_log_tail()}")
                await asyncio.sleep(0.1)
        self.server_pid = self.server.pid
        log(f"server: pid {self.server.pid} on {self.base_url}")

    def server_log_tail(self, lines: int = 40) -> str:
        if self.server_log is None or not self.server_log.exists():
            return ""
        return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])

    async def stop_server(self) -> None:
        if self.server is None:
            return
        if self.server.poll() is None:
            self.server.send_signal(signal.SIGTERM)
            for _ in range(150):
                if self.server.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.server.kill()
                self.server.wait()
        log(f"server: stopped (exit {self.server.returncode})")
        self.server = None

    def check_server_alive(self) -> None:
        if self.server is not None and self.server.poll() is not None:
            raise RuntimeError(f"server died (exit {self.server.returncode}):\n{self.server_log_tail()}")

    # --- HTTP set-up -----------------------------------------------------------------------

    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}

    async def expect(self, response: httpx.Response, *ok: int) -> Any:
        if response.status_code not in ok:
            request = response.request
            body = request.content.decode(errors="replace")[:500] if request.content else ""
            raise RuntimeError(f"{request.method} {request.url.path} {body} -> {response.status_code} "
                               f"{response.text[:1000]}")
        return response.json() if response.content else None

    async def seed_catalog(self, client: httpx.AsyncClient) -> None:
        for scope, sensitivity in SCOPES.items():
            await self.expect(await client.put(f"/v1/scopes/{scope}", headers=self.admin(), json={
                "title": scope.replace(".", " ").title(), "description": f"The subject's {scope}",
                "sensitivity": sensitivity}), 200, 201)
        for purpose, body in PURPOSES.items():
            await self.expect(await client.put(f"/v1/purposes/{purpose}", headers=self.admin(), json=body), 200, 201)
        for partner, body in PARTNERS.items():
            await self.expect(await client.put(f"/v1/partners/{partner}", headers=self.admin(), json=body), 200, 201)
        issued = await self.expect(await client.post(f"/v1/partners/{PARTNER}/credentials", headers=self.admin()), 201)
        self.credential = (issued["client_id"], issued["client_secret"])
        log(f"catalog: {len(SCOPES)} scopes, {len(PURPOSES)} purposes, {len(PARTNERS)} partners; "
            f"credential {issued['client_id']} for {PARTNER}")

    async def partner_token(self, client: httpx.AsyncClient) -> str:
        assert self.credential is not None
        issued = await self.expect(await client.post("/v1/oauth/token", data={
            "grant_type": "client_credentials", "client_id": self.credential[0],
            "client_secret": self.credential[1]}), 200)
        return issued["access_token"]

    async def revoke_credential(self, client: httpx.AsyncClient) -> None:
        if self.credential is not None:
            with contextlib.suppress(httpx.HTTPError):
                await client.delete(f"/v1/partners/{PARTNER}/credentials/{self.credential[0]}",
                                    headers=self.admin())
            self.credential = None

    async def seed_subjects(self, client: httpx.AsyncClient) -> None:
        args = self.args
        rng = random.Random(args.seed)
        now = dt.datetime.now(dt.UTC)
        plans = [subject_plan(rng, now) for _ in range(args.subjects)]
        sources = ["web", "app", "api"]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.subjects):
            queue.put_nowait(i)
        stats: Counter[str] = Counter()
        run_tag = secrets.token_hex(4)
        latencies: list[float] = []
        failures: list[str] = []

        async def worker() -> None:
            while not queue.empty() and len(failures) < 5:
                i = queue.get_nowait()
                sid = subject_id(args.subject_prefix, self.width, i)
                for n, changes in enumerate(plans[i]):
                    body = {"changes": changes, "source": sources[i % 3], "evidence": EVIDENCE[(i + n) % 3]}
                    # An Idempotency-Key makes a retry after a dropped connection apply the change once.
                    headers = {**self.admin(), "Idempotency-Key": f"bench-seed-{run_tag}-{i}-{n}"}
                    started = time.perf_counter()
                    for attempt in range(3):
                        try:
                            answer = await client.post(f"/v1/subjects/{sid}/consents", headers=headers, json=body)
                            break
                        except httpx.TransportError as error:
                            stats["retried after a transport error"] += 1
                            if attempt == 2:
                                failures.append(f"POST /v1/subjects/{sid}/consents: {error!r}")
                                return
                            await asyncio.sleep(0.2)
                    latencies.append(time.perf_counter() - started)
                    stats["requests"] += 1
                    stats["changes"] += len(changes)
                    for change in changes:
                        stats[f"{change['action']}{'' if change.get('partner') is None else ' (partner)'}"] += 1
                    if answer.status_code != 200:
                        failures.append(f"POST /v1/subjects/{sid}/consents {json.dumps(body)} -> "
                                        f"{answer.status_code} {answer.text[:500]}")
                        return

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(args.seed_concurrency)))
        elapsed = time.monotonic() - started
        if failures:
            raise RuntimeError("seeding failed:\n  " + "\n  ".join(failures))
        latencies.sort()
        retried = stats.pop("retried after a transport error", 0)
        mix = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k not in ("requests", "changes"))
        log(f"seed: {args.subjects} subjects, {stats['requests']} requests, {stats['changes']} changes in "
            f"{elapsed:.1f} s ({stats['requests'] / elapsed:.0f} requests/s at {args.seed_concurrency} in flight "
            f"from httpx; p50 {1000 * percentile(latencies, 50):.1f} ms, "
            f"p99 {1000 * percentile(latencies, 99):.1f} ms)")
        log(f"seed: changes by kind: {mix}" + (f"; {retried} requests retried after a dropped connection"
                                                if retried else ""))
        self.results["seed"] = {"subjects": args.subjects, "requests": stats["requests"],
                                "changes": stats["changes"], "seconds": round(elapsed, 2), "retried": retried,
                                "by_kind": {k: v for k, v in stats.items() if k not in ("requests", "changes")}}

    async def warm_and_sample(self, client: httpx.AsyncClient, token: str) -> None:
        """Load every seeded subject into the server's cache (batch decisions), then sample the answer mix."""
        args = self.args
        rng = random.Random(args.seed + 5)
        weighted = [(purpose, scopes) for weight, purpose, scopes in QUESTIONS for _ in range(weight)]
        auth = {"Authorization": f"Bearer {token}"}
        started = time.monotonic()
        for first in range(0, args.subjects, 1000):
            items = [{"subject_id": subject_id(args.subject_prefix, self.width, i), "purpose": "marketing",
                      "scopes": ["profile.email"]} for i in range(first, min(first + 1000, args.subjects))]
            await self.expect(await client.post("/v1/decisions/batch", headers=auth, json={"items": items}), 200)
        log(f"cache: {args.subjects} subjects read by batch decisions in {time.monotonic() - started:.2f} s "
            f"(cold: database reads)")
        decisions: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for _ in range(args.sample):
            purpose, scopes = rng.choice(weighted)
            sid = subject_id(args.subject_prefix, self.width, rng.randrange(args.subjects))
            answer = await self.expect(await client.post("/v1/decisions", headers=auth, json={
                "subject_id": sid, "purpose": purpose, "scopes": scopes}), 200)
            decisions[answer["decision"]] += 1
            for denied in answer["denied"]:
                reasons[denied["reason"]] += 1
        total = sum(decisions.values()) or 1
        log("answers: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in decisions.most_common())
            + "; denied scopes by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
            + f" (sample of {args.sample} single decisions)")
        self.results["answer_mix"] = {"decisions": dict(decisions), "denied_reasons": dict(reasons),
                                      "sample": args.sample}

    async def position(self, client: httpx.AsyncClient, token: str) -> int:
        answer = await self.expect(await client.post("/v1/decisions", headers={"Authorization": f"Bearer {token}"},
                                                     json={"subject_id": "bench-position", "purpose": "marketing",
                                                           "scopes": ["profile"]}), 200)
        return answer["position"]

    # --- wrk -------------------------------------------------------------------------------

    async def wrk(self, name: str, script: str, path: str, connections: int, duration: int) -> dict[str, Any]:
        script_path = self.tmp / f"{name}.lua"
        script_path.write_text(script)
        command = [self.args.wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                   "-s", str(script_path), f"{self.base_url}{path}", "--", str(self.wrk_runs)]
        self.wrk_runs += 1
        self.wrk_proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await self.wrk_proc.communicate()
        code = self.wrk_proc.returncode
        self.wrk_proc = None
        line = next((x for x in stdout.decode().splitlines() if x.startswith("BENCH_RESULT ")), None)
        if code != 0 or line is None:
            raise RuntimeError(f"wrk failed ({code}): {shlex.join(command)}\n{stdout.decode()}{stderr.decode()}")
        result = json.loads(line[len("BENCH_RESULT "):])
        seconds = result["duration_us"] / 1e6
        errors = result["errors"]
        socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
        non_2xx = sum(result["statuses"].values())
        return {"connections": connections, "requests": result["requests"], "seconds": round(seconds, 3),
                "rps": result["requests"] / seconds if seconds else 0.0,
                "p50_ms": result["latency_us"]["p50"] / 1000, "p90_ms": result["latency_us"]["p90"] / 1000,
                "p99_ms": result["latency_us"]["p99"] / 1000, "p999_ms": result["latency_us"]["p999"] / 1000,
                "max_ms": result["latency_us"]["max"] / 1000, "non_2xx": non_2xx, "statuses": result["statuses"],
                "socket_errors": socket_errors, "errors": errors, "command": shlex.join(command)}

    async def wait_quiet(self, name: str) -> None:
        """With --wait-quiet: wait until the rest of the machine uses under 15 % of a core for 3 s."""
        if self.args.wait_quiet <= 0:
            return
        deadline = time.monotonic() + self.args.wait_quiet
        quiet, waited = 0, False
        while quiet < 3:
            meter = CpuMeter(self.server_pid, self.database if self.server else None)
            meter.start()
            await asyncio.sleep(1)
            other = meter.stop()["other_core_pct"] or 0
            quiet = quiet + 1 if other < 15 else 0
            if quiet == 0:
                if time.monotonic() > deadline:
                    log(f"  (machine still busy before {name}: {other:.0f}% of a core used by others; going on)")
                    return
                waited = True
        if waited:
            log(f"  (waited for a quiet machine before {name})")

    async def run_wrk(self, name: str, script: str, path: str, connections: int) -> dict[str, Any]:
        """Warm-up, then the measured run; with --wait-quiet, a run that other processes disturbed
        (over 25 % of a core) is repeated, at most twice."""
        for attempt in range(3):
            result = await self._run_wrk_once(name, script, path, connections)
            other = result["cpu"].get("other_core_pct") or 0
            churn = (result.get("pg_sessions_opened") or 0) > connections  # then other is PostgreSQL's
            if self.args.wait_quiet <= 0 or other <= 25 or churn or attempt == 2:
                return result
            log(f"  (run {name} disturbed: other processes used {other:.0f}% of a core; repeating it)")
        raise AssertionError("unreachable")

    async def _run_wrk_once(self, name: str, script: str, path: str, connections: int) -> dict[str, Any]:
        self.check_server_alive()
        await self.wait_quiet(name)
        warmup = None
        if self.args.warmup > 0:
            warmup = await self.wrk(f"{name}-warmup", script, path, connections, self.args.warmup)
            self.flag_errors(f"{name} (warm-up)", warmup)
        meter = CpuMeter(self.server_pid, self.database if self.server else None)
        sessions = await self.pg_sessions() if self.server else None
        meter.start()
        result = await self.wrk(name, script, path, connections, self.args.duration)
        result["cpu"] = meter.stop()
        if sessions is not None:
            # Connections the server opened during the run: a pool too small for the concurrency
            # opens and closes them all the time, and their backends' CPU escapes the pg column.
            await asyncio.sleep(1.0)  # backends report their statistics within a second
            result["pg_sessions_opened"] = (await self.pg_sessions() or 0) - sessions
        result["warmup_requests"] = warmup["requests"] if warmup else 0
        self.check_server_alive()
        self.flag_errors(name, result)
        return result

    async def pg_sessions(self) -> int | None:
        """Sessions ever opened on the bench database (pg_stat_database.sessions, PostgreSQL 14+)."""
        if self.database is None:
            return None
        admin_dsn = postgres_urls(self.args.postgres, urllib.parse.urlsplit(self.args.postgres).path.lstrip("/")
                                  or "postgres")[0]
        try:
            conn = await asyncpg.connect(admin_dsn)
            try:
                return await conn.fetchval("SELECT sessions FROM pg_stat_database WHERE datname = $1",
                                           self.database)
            finally:
                await conn.close()
        except (asyncpg.PostgresError, OSError):
            return None

    def flag_errors(self, name: str, result: dict[str, Any]) -> None:
        if result["non_2xx"] or result["socket_errors"]:
            message = (f"run {name}: {result['non_2xx']} non-2xx responses {result['statuses']} and "
                       f"{result['socket_errors']} socket errors {result['errors']} of {result['requests']} requests")
            self.problems.append(message)
            log("!" * 100 + f"\n!!! {message}\n" + "!" * 100)

    # --- the raw asyncpg baseline ------------------------------------------------------------

    async def baseline(self) -> dict[str, Any]:
        args = self.args
        dsn = self.database_dsn
        assert dsn is not None
        schema = "bench_baseline"
        setup = await asyncpg.connect(dsn)
        try:
            await setup.execute(f"""
                DROP SCHEMA IF EXISTS {schema} CASCADE;
                CREATE SCHEMA {schema};
                CREATE TABLE {schema}.events (
                    position bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                    event_id uuid NOT NULL UNIQUE,
                    stream_id varchar(200) NOT NULL,
                    stream_version integer NOT NULL,
                    type varchar(64) NOT NULL,
                    data jsonb NOT NULL,
                    metadata jsonb NOT NULL,
                    recorded_at timestamptz NOT NULL,
                    UNIQUE (stream_id, stream_version));
                CREATE TABLE {schema}.state (
                    subject_id varchar(128) PRIMARY KEY,
                    version integer NOT NULL,
                    position bigint NOT NULL,
                    global_opt_out boolean NOT NULL);
                """)
            fsync = await setup.fetchval("SHOW fsync")
            sync_commit = await setup.fetchval("SHOW synchronous_commit")
            connections = [await asyncpg.connect(dsn) for _ in range(args.baseline_connections)]
            try:
                if args.warmup > 0:
                    await self._baseline_loop(connections, schema, args.warmup, {}, [])
                versions: dict[str, int] = {}
                latencies: list[float] = []
                meter = CpuMeter(None, self.database)
                meter.start()
                seconds = await self._baseline_loop(connections, schema, args.duration, versions, latencies)
                cpu = meter.stop()
            finally:
                for conn in connections:
                    await conn.close()
            await setup.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await setup.close()
        latencies.sort()
        return {"connections": args.baseline_connections, "requests": len(latencies), "seconds": round(seconds, 3),
                "rps": len(latencies) / seconds, "p50_ms": 1000 * percentile(latencies, 50),
                "p90_ms": 1000 * percentile(latencies, 90), "p99_ms": 1000 * percentile(latencies, 99),
                "p999_ms": 1000 * percentile(latencies, 99.9), "max_ms": 1000 * latencies[-1] if latencies else 0,
                "non_2xx": 0, "socket_errors": 0, "statuses": {}, "cpu": cpu,
                "fsync": fsync, "synchronous_commit": sync_commit}

    async def _baseline_loop(self, connections: list, schema: str, duration: float,
                             versions: dict[str, int], latencies: list[float]) -> float:
        args = self.args
        rng = random.Random(args.seed + 53)
        # Distinct subject ids from earlier loops (warm-up) so stream versions never collide.
        tag = secrets.token_hex(3)
        insert = (f"INSERT INTO {schema}.events (event_id, stream_id, stream_version, type, data, metadata, "
                  f"recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING position")
        upsert = (f"INSERT INTO {schema}.state (subject_id, version, position, global_opt_out) "
                  f"VALUES ($1, $2, $3, false) ON CONFLICT (subject_id) DO UPDATE "
                  f"SET version = excluded.version, position = excluded.position")
        metadata = json.dumps({"actor": "admin:bench"})
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + duration
        import uuid

        async def worker(conn) -> None:
            while loop.time() < stop_at:
                sid = f"{tag}-{rng.randrange(args.subjects)}"
                version = versions[sid] = versions.get(sid, 0) + 1
                now = dt.datetime.now(dt.UTC)
                data = json.dumps({"purpose": WRITE_KEY["purpose"], "partner": WRITE_KEY["partner"],
                                   "scopes": WRITE_KEY["scopes"], "expires_at": None, "purpose_version": 1,
                                   "source": "web", "evidence": {"collection_point": "bench-preferences",
                                                                 "text_shown": "Share my email"}})
                started = time.perf_counter()
                async with conn.transaction():
                    position = await conn.fetchval(insert, uuid.uuid4(), f"subject:{sid}", version,
                                                   "consent_granted", data, metadata, now)
                    await conn.execute(upsert, sid, version, position)
                latencies.append(time.perf_counter() - started)

        started = time.monotonic()
        await asyncio.gather(*(worker(conn) for conn in connections))
        return time.monotonic() - started

    # --- the whole run ---------------------------------------------------------------------

    async def run(self) -> None:
        args = self.args
        wanted = set(args.only)
        own = self.base_url is None
        try:
            if own or "baseline" in wanted:
                await self.create_database()
            if own:
                self.migrate()
                await self.start_server()
            assert self.base_url is not None
            if not own:
                target = urllib.parse.urlsplit(self.base_url)
                if target.hostname in ("127.0.0.1", "localhost", "::1"):
                    self.server_pid = listening_pid(target.port or 80)
                log(f"server: {self.base_url}, " + (f"pid {self.server_pid} (its CPU is measured)" if self.server_pid
                                                   else "not found on this machine (its CPU is not measured)"))
            # Idle connections are dropped after 1 s, well before uvicorn's 5 s keep-alive timeout closes
            # them from its side: reusing one that the server is closing fails with a ReadError.
            limits = httpx.Limits(max_connections=args.seed_concurrency, keepalive_expiry=1.0)
            async with httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits) as client:
                await self.seed_catalog(client)
                try:
                    await self.main_runs(client, wanted)
                finally:
                    await self.revoke_credential(client)
        finally:
            if self.wrk_proc is not None and self.wrk_proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.wrk_proc.kill()
                await self.wrk_proc.wait()
            if self.server_pid is not None:
                self.results["server_rss_mb"] = self.server_rss_mb()
            if self.server is not None:
                self.results["server_log_tail"] = self.server_log_tail(20)
            await self.stop_server()
            await self.drop_database()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def server_rss_mb(self) -> float | None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            for line in Path(f"/proc/{self.server_pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
        return None

    async def main_runs(self, client: httpx.AsyncClient, wanted: set[str]) -> None:
        args = self.args
        if not args.skip_seed:
            await self.seed_subjects(client)
        token = await self.partner_token(client)
        await self.warm_and_sample(client, token)
        runs = self.results.setdefault("runs", {})
        if "ceiling" in wanted:
            log(f"run ceiling: GET /health/live, {args.connections} connections, {args.duration} s")
            runs["ceiling"] = await self.run_wrk("ceiling", lua_ceiling(args, ""), "/health/live", args.connections)
        if "decisions" in wanted:
            log(f"run decisions: POST /v1/decisions, {args.connections} connections, {args.duration} s")
            token = await self.partner_token(client)
            runs["decisions"] = await self.run_wrk("decisions", lua_decisions(args, token), "/v1/decisions",
                                                   args.connections)
        if "latency" in wanted:
            log(f"run latency: POST /v1/decisions, {args.latency_connections} connections, {args.duration} s")
            token = await self.partner_token(client)
            runs["latency"] = await self.run_wrk("latency", lua_decisions(args, token), "/v1/decisions",
                                                 args.latency_connections)
        if "batch" in wanted:
            log(f"run batch: POST /v1/decisions/batch x{args.batch_size}, {args.batch_connections} connections, "
                f"{args.duration} s")
            token = await self.partner_token(client)
            result = await self.run_wrk("batch", lua_batch(args, token), "/v1/decisions/batch",
                                        args.batch_connections)
            result["decisions_per_s"] = result["rps"] * args.batch_size
            runs["batch"] = result
        if "writes" in wanted:
            log(f"run writes: POST /v1/subjects/{{id}}/consents, one change each, {args.write_connections} "
                f"connections, {args.duration} s")
            token = await self.partner_token(client)
            before = await self.position(client, token)
            result = await self.run_wrk("writes", lua_writes(args, self.admin_key), "/v1/subjects",
                                        args.write_connections)
            after = await self.position(client, token)
            # Every request should append one event: count them over warm-up and measured run.
            result["events_appended"] = after - before
            result["in_flight_at_stop"] = args.write_connections * (2 if args.warmup > 0 else 1)
            runs["writes"] = result
        if "baseline" in wanted:
            log(f"run baseline: raw asyncpg, {args.baseline_connections} connections, insert + upsert a "
                f"transaction, {args.duration} s")
            await self.wait_quiet("baseline")
            runs["baseline"] = await self.baseline()


# --- the report ------------------------------------------------------------------------------------

def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def verdicts(runs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []

    def add(name: str, value: float | None, target: float, higher: bool, what: str) -> None:
        ok = None if value is None else (value >= target if higher else value < target)
        out.append({"check": name, "value": value, "target": target, "higher_is_better": higher,
                    "ok": ok, "what": what})

    get = lambda run, key: runs.get(run, {}).get(key)  # noqa: E731
    add("decisions / ceiling", ratio(get("decisions", "rps"), get("ceiling", "rps")),
        TARGETS["decisions_vs_ceiling"], True, "single-decision rps over GET /health/live rps")
    add("decision p99 ms", get("latency", "p99_ms"), TARGETS["decision_p99_ms"], False,
        "single decisions at the latency connections")
    add("batch decisions/s", get("batch", "decisions_per_s"), TARGETS["batch_decisions_per_s"], True,
        "requests/s x batch size, one server process")
    add("writes / asyncpg", ratio(get("writes", "rps"), get("baseline", "rps")), TARGETS["writes_vs_baseline"],
        True, "consent writes rps over raw asyncpg tx/s")
    add("write p99 ms", get("writes", "p99_ms"), TARGETS["write_p99_ms"], False, "consent writes")
    return out


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def report(bench: Bench, meta: dict[str, Any]) -> str:
    args = bench.args
    runs = bench.results.get("runs", {})
    lines = ["", "=" * 108, "consent service benchmark", "=" * 108]
    for key in ("date", "command", "service", "machine", "cpu", "load_generator", "server", "target", "postgres"):
        if meta.get(key):
            lines.append(f"{key:<15} {meta[key]}")
    lines.append(f"{'workload':<15} {args.subjects} subjects (prefix {args.subject_prefix!r}), "
                 f"{args.duration} s a run after {args.warmup} s warm-up, seed {args.seed}")
    lines.append("")
    header = (f"{'run':<32}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>7}"
              f"{'srv us/req':>11}  {'cpu % of a core: server  pg  load other':>40}")
    lines += [header, "-" * len(header)]
    labels = {"ceiling": "GET /health/live (ceiling)", "decisions": "POST /v1/decisions",
              "latency": "POST /v1/decisions (latency)", "batch": f"POST /v1/decisions/batch x{args.batch_size}",
              "writes": "POST .../consents, 1 change", "baseline": "raw asyncpg tx (insert+upsert)"}
    for name in RUNS:
        run = runs.get(name)
        if run is None:
            continue
        cpu = run.get("cpu", {})
        load = cpu.get("wrk_core_pct") if name != "baseline" else cpu.get("bench_core_pct")
        errors = run["non_2xx"] + run["socket_errors"]
        usage = "".join(f"{fmt(v):>6}" for v in (cpu.get("server_core_pct"), cpu.get("postgres_core_pct"),
                                                 load, cpu.get("other_core_pct")))
        per_request = (None if cpu.get("server_core_pct") is None or not run["rps"]
                       else 10_000 * cpu["server_core_pct"] / run["rps"])
        run["server_cpu_us_per_request"] = per_request
        lines.append(f"{labels[name]:<32}{run['connections']:>6}{fmt(run['rps']):>10}{fmt(run['p50_ms'], 2):>9}"
                     f"{fmt(run['p99_ms'], 2):>9}{fmt(run['max_ms'], 1):>9}{errors:>7}{fmt(per_request):>11}"
                     f"  {usage:>40}")
        if name == "batch":
            lines.append(f"{'  = decisions/s':<32}{'':>6}{fmt(run['decisions_per_s']):>10}")
    lines.append("  (srv us/req: server CPU time per request; cpu: load = wrk, or this process for the asyncpg "
                 "baseline;\n   pg = the bench database's backends and PostgreSQL's background writers; "
                 "other = the rest of the machine)")
    # With --url the server's PostgreSQL backends are not told apart: they count as other.
    busy = [f"{name} {runs[name]['cpu']['other_core_pct']:.0f}%" for name in RUNS
            if name in runs and (runs[name].get("cpu", {}).get("other_core_pct") or 0) > 15
            and (runs[name]["cpu"].get("postgres_core_pct") is not None or name in ("ceiling", "decisions",
                                                                                    "latency", "batch"))
            and (runs[name]["cpu"].get("server_core_pct") is not None or name == "baseline")
            # Backends that come and go during the run count as other: not someone else's load.
            and (runs[name].get("pg_sessions_opened") or 0) <= runs[name]["connections"]]
    if busy:
        lines.append(f"  WARNING: the machine was not quiet: other processes used up to a core during "
                     f"{', '.join(busy)}: figures are skewed (compare ratios, rerun on a quiet machine)")
    if "baseline" in runs:
        lines.append(f"  (baseline: PostgreSQL fsync={runs['baseline']['fsync']}, "
                     f"synchronous_commit={runs['baseline']['synchronous_commit']})")
    churn = [f"{name} {run['pg_sessions_opened']:,} ({run['pg_sessions_opened'] / max(1, run['requests']):.2f} "
             f"a request)" for name, run in runs.items() if run.get("pg_sessions_opened")]
    if churn:
        lines.append("  (PostgreSQL sessions the server opened during a run: " + ", ".join(churn)
                     + ";\n   the CPU of backends that started or ended during a run is not in pg but in other)")
    if "writes" in runs and "events_appended" in runs["writes"]:
        w = runs["writes"]
        lines.append(f"  (writes: {w['events_appended']} events appended for {w['warmup_requests']} warm-up + "
                     f"{w['requests']} measured requests, plus up to {w['in_flight_at_stop']} in flight when wrk "
                     f"stopped: one event a request)")
    lines.append("")
    header = f"{'check':<24}{'measured':>14}{'target':>14}  {'result':<8} what"
    lines += [header, "-" * 108]
    for v in verdicts(runs):
        higher = v["higher_is_better"]
        digits = 2 if "/" in v["check"] and "decisions/s" not in v["check"] or "ms" in v["check"] else 0
        target = (">= " if higher else "< ") + fmt(v["target"], digits)
        result = "n/a" if v["ok"] is None else ("PASS" if v["ok"] else "FAIL")
        lines.append(f"{v['check']:<24}{fmt(v['value'], digits):>14}{target:>14}  {result:<8} {v['what']}")
    if bench.problems:
        lines += ["", "!" * 108, "ERRORS: these runs had failed requests; their figures are not valid:"]
        lines += [f"  {p}" for p in bench.problems]
        lines.append("!" * 108)
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server (a maintenance database on it) where the bench database is "
                             "created and dropped (default: %(default)s)")
    parser.add_argument("--url", help="target this running server instead of starting one")
    parser.add_argument("--admin-key", help="an admin key of the --url server")
    parser.add_argument("--subjects", type=int, default=10_000, help="subjects to seed (default %(default)s)")
    parser.add_argument("--subject-prefix", default="bench-", help="subject ids are PREFIX + zero-padded index")
    parser.add_argument("--duration", type=int, default=10, help="seconds a measured run (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of warm-up before each run (default %(default)s)")
    parser.add_argument("--connections", type=int, default=64, help="connections for the ceiling and decision "
                                                                     "throughput runs (default %(default)s)")
    parser.add_argument("--latency-connections", type=int, default=8, help="default %(default)s")
    parser.add_argument("--batch-connections", type=int, default=4, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=1000, help="items per batch request (default %(default)s)")
    parser.add_argument("--write-connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--baseline-connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--seed-concurrency", type=int, default=32,
                        help="seeding requests in flight (default %(default)s)")
    parser.add_argument("--skip-seed", action="store_true", help="with --url: subjects were seeded by an earlier run "
                                                                 "with the same --subjects and --subject-prefix")
    parser.add_argument("--only", default=",".join(RUNS), help=f"comma list of runs among {', '.join(RUNS)}")
    parser.add_argument("--sample", type=int, default=300, help="single decisions sampled over HTTP to show the "
                                                                "answer mix (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload (default %(default)s)")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for other processes on the machine to use "
                             "under 15%% of a core, and repeat (twice at most) a run they disturbed "
                             "(default: do not wait; other load is reported either way)")
    parser.add_argument("--server-log", metavar="PATH", help="keep the started server's output in PATH "
                                                             "(default: a temporary file, its tail printed)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(RUNS))
    if unknown:
        parser.error(f"--only: unknown runs {', '.join(unknown)}; choose among {', '.join(RUNS)}")
    args.only = only
    if args.url and not args.admin_key:
        parser.error("--url needs --admin-key")
    if args.admin_key and not args.url:
        parser.error("--admin-key goes with --url")
    if args.skip_seed and not args.url:
        parser.error("--skip-seed needs --url (a fresh database has no subjects)")
    if args.subjects < 1 or args.duration <= 0 or args.batch_size < 1:
        parser.error("--subjects, --duration and --batch-size must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.wrk).exists() and shutil.which(args.wrk) is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    meta = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "machine": f"nproc {os.cpu_count()}, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "cpu": cpu_model(),
        "service": service_revision(),
        "load_generator": f"{wrk_version(args.wrk)}, -t1, Lua scripts; asyncpg baseline in the bench process",
    }
    bench = Bench(args)
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        meta["load_generator"] += " (uvloop)"
    except ImportError:
        runner = asyncio.Runner()
    status = 0
    try:
        with runner:
            runner.run(bench.run())
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, database dropped", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - report and fail
        print(f"\nbench failed: {error}", file=sys.stderr)
        status = 1
    if hasattr(bench, "server_command"):
        launcher = bench.server_command[0]
        with contextlib.suppress(ValueError):
            if not os.path.relpath(launcher).startswith(".."):
                launcher = os.path.relpath(launcher)
        meta["server"] = ("CONSENT_PARTNER_RATE_LIMIT=0 " + shlex.join([launcher, *bench.server_command[1:]])
                          .replace(f"--port {bench.base_url.rsplit(':', 1)[1]}", "--port <free port>"))
    meta["target"] = bench.base_url
    if "baseline" in bench.results.get("runs", {}):
        b = bench.results["runs"]["baseline"]
        meta["postgres"] = f"{args.postgres} (fsync={b['fsync']}, synchronous_commit={b['synchronous_commit']})"
    if bench.results.get("runs"):
        print(report(bench, meta), flush=True)
    if bench.problems:
        status = 1
    if args.json:
        payload = {"meta": meta, "options": {k: v for k, v in vars(args).items() if k not in ("admin_key",)},
                   **{k: v for k, v in bench.results.items() if k != "server_log_tail"},
                   "checks": verdicts(bench.results.get("runs", {})), "problems": bench.problems,
                   "targets": TARGETS}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    tail = bench.results.get("server_log_tail")
    if tail:
        print("server log (last lines):\n" + tail)
    elif status and bench.server_log is not None:
        print("server log: empty")
    return status


if __name__ == "__main__":
    sys.exit(main())
