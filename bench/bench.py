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

Runs that happen only when named in --only (each starts its own database and servers; not with --url):
  lag          publish lag: the write load of `writes` on a server with CONSENT_NATS_URL, a plain
               NATS subscriber in this process; receipt time minus the CloudEvent `time` (an upper
               bound of commit to receipt), p50/p99/max (target p99 < 20 ms)
  propagation  two servers on one database and one NATS stream, wrk writes on A at
               --propagation-connections; a probe toggles a grant on A and polls B's decision until it
               flips (target p50 < 10 ms, p99 < 50 ms); then the same with min_position: stale answers
               must be 0
  scale        for each of --scale-subjects: bulk-seed 10 consents a subject with SQL, `consent
               projections rebuild`, then decisions at --connections and --latency-connections over
               random subjects and the server's RSS; ratios between the smallest and largest size
               (targets: within 20 %; rebuild >= 20,000 events/s)

Exit status: 0 when every run completed without errors (whether or not targets were met),
1 when some request failed (non-2xx, socket errors) or the bench broke, 2 when wrk is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import random
import re
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

from seed_scale import Seeder, chunks, copy_rows

try:
    import asyncpg
    import httpx
except ImportError as missing:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"bench needs asyncpg and httpx in this interpreter ({missing}); "
             f"install the project with its dev extras: pip install -e '.[dev]'")

RUNS = ("ceiling", "decisions", "latency", "batch", "writes", "baseline")
EXTRA_RUNS = ("lag", "propagation", "scale")  # only when named in --only
TARGETS = {
    "decisions_vs_ceiling": 0.7,     # single decisions / GET /health/live, same connections
    "decision_p99_ms": 5.0,          # at --latency-connections (8)
    "batch_decisions_per_s": 50_000,  # per server process
    "writes_vs_baseline": 0.5,       # consent writes / raw asyncpg transactions
    "write_p99_ms": 50.0,
    "publish_lag_p99_ms": 20.0,      # commit to NATS subscriber receipt (measured as an upper bound)
    "propagation_p50_ms": 10.0,      # commit on A to decision change on B
    "propagation_p99_ms": 50.0,
    "stale_with_min_position": 0,    # B's next answer with min_position from A's write
    "scale_rps_ratio": 0.8,          # decisions rps, largest / smallest --scale-subjects
    "scale_p99_ratio": 1.2,          # decision p99 at --latency-connections, largest / smallest
    "rebuild_events_per_s": 20_000,  # consent projections rebuild
}
PARTNER = "acme"  # the partner whose token drives the decision runs
# Wraps the data keys that encrypt evidence; every server of one run shares it (they share a database).
MASTER_KEY = base64.b64encode(secrets.token_bytes(32)).decode()
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

    def __init__(self, server_pid: int | None, database: str | None, extra_pids: dict[str, int] | None = None) -> None:
        self.server_pid = server_pid
        self.database = database
        # Other processes the run drives (a second replica, nats-server), by label, counted apart.
        self.extra_pids = extra_pids or {}
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
        self.extra0 = {label: (pid, self._ticks(pid)) for label, pid in self.extra_pids.items()}
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
        extra_s = {label: ((self._ticks(pid) or 0) - (t0 or 0)) / self.ticks
                   for label, (pid, t0) in self.extra0.items()}
        known = children + own + (server_s or 0) + (pg_s or 0) + sum(extra_s.values())
        extra = {"extra_core_pct": {label: pct(v) for label, v in extra_s.items()}} if extra_s else {}
        return {
            **extra,
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


# Zipf's law over the subjects (s = ZIPF_S): rank r (0 = the most asked) is subject (r * ZIPF_STRIDE) mod N,
# so that the hot subjects are spread over the id space. ZIPF_STRIDE is a prime: coprime with any N below it.
ZIPF_S = 1.1
ZIPF_STRIDE = 1_000_003


def zipf_subject(rank: int, n: int) -> int:
    return (rank * ZIPF_STRIDE) % n


def lua_subject_index(distribution: str) -> str:
    """`index()`: a subject index drawn uniformly, or by Zipf's law (a cumulative table, binary search)."""
    if distribution == "uniform":
        return "local function index() return math.random(0, N - 1) end\n"
    return (f"local ZS, STRIDE = {ZIPF_S}, {ZIPF_STRIDE}\nlocal cdf = nil\n"
            "local function index()\n"
            "  if cdf == nil then\n"
            "    cdf = {}\n    local total = 0\n"
            "    for k = 1, N do total = total + k ^ -ZS; cdf[k] = total end\n"
            "    for k = 1, N do cdf[k] = cdf[k] / total end\n"
            "  end\n"
            "  local u, lo, hi = math.random(), 1, N\n"
            "  while lo < hi do\n"
            "    local mid = math.floor((lo + hi) / 2)\n"
            "    if cdf[mid] < u then lo = mid + 1 else hi = mid end\n"
            "  end\n"
            "  return ((lo - 1) * STRIDE) % N\nend\n")


def lua_decisions(args: argparse.Namespace, token: str, distribution: str = "uniform") -> str:
    return (lua_prelude(args, args.seed + 11) + lua_questions() + lua_subject_index(distribution) +
            'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["Authorization"] = {lua_str("Bearer " + token)}\n'
            "function request()\n"
            "  local body = '{\"subject_id\":\"' .. sid(index()) .. QUESTIONS[math.random(NQ)]\n"
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


def lua_pacing(rate: float | None, connections: int) -> str:
    """wrk delay(): each connection waits connections/rate s on average (uniform 0.5x to 1.5x, whole ms)
    before each request, so the load runs near `rate` writes/s while the server keeps up."""
    if not rate:
        return ""
    return (f"local PACE_MS = {1000.0 * connections / rate:.3f}\n"
            "function delay() return PACE_MS * (0.5 + math.random()) end\n")


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


class Server:
    """One started uvicorn process."""

    def __init__(self, label: str, popen: subprocess.Popen, base_url: str, log_path: Path, command: list[str],
                 env: dict[str, str]) -> None:
        self.label, self.popen, self.base_url, self.log, self.command, self.env = (
            label, popen, base_url, log_path, command, env)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        if not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise RuntimeError(f"server {self.label} died (exit {self.popen.returncode}):\n{self.log_tail()}")

    def rss_mb(self) -> float | None:
        return process_rss_mb(self.popen.pid)

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            for _ in range(150):
                if self.popen.poll() is not None:
                    break
                await asyncio.sleep(0.1)
            else:
                self.popen.kill()
                self.popen.wait()


def process_rss_mb(pid: int | None) -> float | None:
    with contextlib.suppress(OSError, ValueError, TypeError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


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
        self.servers: list[Server] = []  # every server started and not yet stopped
        self.nats_streams: list[str] = []  # JetStream streams created for a run, deleted at the end
        self.measured_window: tuple[float, float] | None = None  # wall clock of the last measured wrk run
        self.server_revision: str | None = None  # the service's commit when the last server started

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

    async def spawn_server(self, label: str, extra_env: dict[str, str] | None = None,
                           signing_key: str | None = None) -> Server:
        """Start one uvicorn worker on the current database (self.admin_key, a new one if unset) and
        wait until it is ready."""
        port = free_port()
        if self.admin_key is None:
            self.admin_key = secrets.token_urlsafe(24)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
        env.update(CONSENT_DATABASE_URL=self.database_url, CONSENT_ADMIN_KEYS=self.admin_key,
                   CONSENT_TOKEN_SIGNING_KEY=signing_key or secrets.token_urlsafe(32), CONSENT_PARTNER_RATE_LIMIT="0",
                   CONSENT_MASTER_KEY=MASTER_KEY)
        env.update(dict(setting.split("=", 1) for setting in self.args.server_env))
        env.update(extra_env or {})
        uvicorn = Path(sys.executable).parent / "uvicorn"
        launcher = [str(uvicorn)] if uvicorn.exists() else [sys.executable, "-m", "uvicorn"]
        command = [*launcher,
                   "consent.api.app:create_app", "--factory", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(self.args.server_workers), "--loop", "uvloop", "--http", "httptools",
                   "--no-access-log",
                   "--log-level", "warning"]
        if self.args.server_log:
            log_path = Path(self.args.server_log if label == "server" else f"{self.args.server_log}.{label}")
        else:
            log_path = self.tmp / f"{label}.log"
        with open(log_path, "wb") as out:
            # Its own session: a Ctrl-C reaches the bench, which then stops it and drops the database.
            popen = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        server = Server(label, popen, f"http://127.0.0.1:{port}", log_path, command,
                        {k: v for k, v in (extra_env or {}).items()})
        self.servers.append(server)
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(timeout=2) as client:
            while True:
                if popen.poll() is not None:
                    raise RuntimeError(f"server {label} exited with {popen.returncode}:\n{server.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"{server.base_url}/health/ready")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server {label} not ready after 60 s:\n{server.log_tail()}")
                await asyncio.sleep(0.1)
        return server

    async def start_server(self, label: str = "server", extra_env: dict[str, str] | None = None,
                           signing_key: str | None = None) -> Server:
        """The server the wrk runs target (self.server, self.base_url)."""
        server = await self.spawn_server(label, extra_env, signing_key)
        # Others may commit while the bench runs: the code a run measured is the one its server started with.
        self.server_revision = service_revision()
        self.server, self.server_log, self.base_url = server.popen, server.log, server.base_url
        self.server_pid = server.popen.pid
        if label == "server" or not hasattr(self, "server_command"):
            self.server_command = server.command
        log(f"server{'' if label == 'server' else ' ' + label}: pid {server.popen.pid} on {self.base_url}"
            + (f" ({', '.join(f'{k}={v}' for k, v in server.env.items())})" if server.env else ""))
        return server

    def server_log_tail(self, lines: int = 40) -> str:
        if self.server_log is None or not self.server_log.exists():
            return ""
        return "\n".join(self.server_log.read_text(errors="replace").splitlines()[-lines:])

    async def stop_server(self) -> None:
        if self.server is None:
            return
        server = next((x for x in self.servers if x.popen is self.server), None)
        if server is not None:
            await server.stop()
            self.servers.remove(server)
            code = server.popen.returncode
        else:
            code = self.server.returncode
        log(f"server: stopped (exit {code})")
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

    async def run_wrk(self, name: str, script: str, path: str, connections: int,
                      extra_pids: dict[str, int] | None = None) -> dict[str, Any]:
        """Warm-up, then the measured run; with --wait-quiet, a run that other processes disturbed
        (over 25 % of a core) is repeated, at most twice."""
        for attempt in range(3):
            result = await self._run_wrk_once(name, script, path, connections, extra_pids)
            other = result["cpu"].get("other_core_pct") or 0
            churn = (result.get("pg_sessions_opened") or 0) > connections  # then other is PostgreSQL's
            if self.args.wait_quiet <= 0 or other <= 25 or churn or attempt == 2:
                return result
            log(f"  (run {name} disturbed: other processes used {other:.0f}% of a core; repeating it)")
        raise AssertionError("unreachable")

    async def _run_wrk_once(self, name: str, script: str, path: str, connections: int,
                            extra_pids: dict[str, int] | None = None) -> dict[str, Any]:
        self.check_server_alive()
        await self.wait_quiet(name)
        warmup = None
        if self.args.warmup > 0:
            warmup = await self.wrk(f"{name}-warmup", script, path, connections, self.args.warmup)
            self.flag_errors(f"{name} (warm-up)", warmup)
        meter = CpuMeter(self.server_pid, self.database if self.server else None, extra_pids)
        sessions = await self.pg_sessions() if self.server else None
        meter.start()
        started = time.time()
        result = await self.wrk(name, script, path, connections, self.args.duration)
        result["cpu"] = meter.stop()
        self.measured_window = (started, time.time())
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

    # --- extra runs: lag, propagation, scale -------------------------------------------------

    def nats_env(self, tag: str) -> dict[str, str]:
        """A stream and subject prefix of this run's own, so that nothing else on the NATS server is touched."""
        env = {"CONSENT_NATS_URL": self.args.nats, "CONSENT_NATS_STREAM": f"BENCH_{tag.upper()}",
               "CONSENT_NATS_SUBJECT_PREFIX": f"bench{tag}.consent.v1"}
        if self.args.relay:
            env["CONSENT_RELAY"] = self.args.relay
        return env

    @staticmethod
    async def relay_child(client: httpx.AsyncClient) -> dict[str, int]:
        """The relay child's pid (CONSENT_RELAY=process), for the CPU meter."""
        pid = (await client.get("/health/ready")).json().get("relay", {}).get("pid")
        return {"relay": pid} if pid else {}

    def nats_server_pid(self) -> dict[str, int]:
        target = urllib.parse.urlsplit(self.args.nats)
        if target.hostname not in ("127.0.0.1", "localhost", "::1"):
            return {}
        pid = listening_pid(target.port or 4222)
        return {"nats-server": pid} if pid else {}

    async def delete_streams(self) -> None:
        if not self.nats_streams:
            return
        import nats
        try:
            nc = await nats.connect(self.args.nats, connect_timeout=5, max_reconnect_attempts=1, allow_reconnect=False)
        except Exception as error:  # noqa: BLE001 - say what was left behind
            log(f"nats: could not connect to delete streams {', '.join(self.nats_streams)}: {error!r}")
            return
        try:
            js = nc.jetstream(timeout=10)
            for stream in list(self.nats_streams):
                try:
                    await js.delete_stream(stream)
                    log(f"nats: deleted stream {stream}")
                except Exception as error:  # noqa: BLE001
                    log(f"nats: could not delete stream {stream}: {error!r}")
                self.nats_streams.remove(stream)
        finally:
            await nc.close()

    async def end_run(self) -> None:
        """Stop every server of an extra run, drop its database, delete its stream."""
        await self.stop_wrk()
        for server in [x for x in self.servers if x.popen is not self.server]:
            if server.popen.poll() is not None:
                self.results["server_log_tail"] = server.log_tail(20)
            await server.stop()
            self.servers.remove(server)
            log(f"server {server.label}: stopped (exit {server.popen.returncode})")
        if self.server is not None:
            self.results["server_log_tail"] = self.server_log_tail(20)
        await self.stop_server()
        await self.drop_database()
        await self.delete_streams()
        self.credential = None
        self.admin_key = None

    async def sql(self, query: str, *params: Any) -> list[Any]:
        conn = await asyncpg.connect(self.database_dsn)
        try:
            return await conn.fetch(query, *params)
        finally:
            await conn.close()

    async def lag_run(self) -> None:
        """Publish lag under the write load of `writes`: CloudEvent `time` (occurred_at, taken before the
        write's transaction) to receipt by a plain NATS subscriber in this process."""
        import nats
        args = self.args
        tag = secrets.token_hex(4)
        env = self.nats_env(tag)
        prefix = env["CONSENT_NATS_SUBJECT_PREFIX"]
        pace = f" paced near {args.write_rate:g}/s" if args.write_rate else ""
        log(f"run lag: POST .../consents at {args.write_connections} connections{pace}, {args.duration} s, on a server "
            f"publishing to NATS {args.nats} (stream {env['CONSENT_NATS_STREAM']}); subscriber on {prefix}.subject.>")
        received: list[tuple[float, bytes]] = []

        async def on_message(msg) -> None:
            received.append((time.time(), msg.data))

        try:
            await self.create_database()
            self.migrate()
            self.nats_streams.append(env["CONSENT_NATS_STREAM"])
            nc = await nats.connect(args.nats, name="consent-bench-lag")
            try:
                await nc.subscribe(f"{prefix}.subject.>", cb=on_message, pending_msgs_limit=0,
                                    pending_bytes_limit=0)
                await nc.flush()
                await self.start_server("lag", env)
                async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
                    await self.seed_catalog(client)
                    extra = {**self.nats_server_pid(), **await self.relay_child(client)}
                    # A probe among the load, one write at a time: its answer comes after its commit, so
                    # answer to receipt is a lower bound of commit to receipt (the CloudEvent time gives
                    # the upper bound).
                    stop_probe = asyncio.Event()
                    probe_task = asyncio.create_task(self.lag_probe(client, f"bench-lagprobe-{tag}", stop_probe))
                    try:
                        script = lua_writes(args, self.admin_key) + lua_pacing(args.write_rate,
                                                                               args.write_connections)
                        result = await self.run_wrk("lag", script, "/v1/subjects", args.write_connections,
                                                    extra_pids=extra)
                    finally:
                        stop_probe.set()
                        probes = await probe_task
                    window = self.measured_window
                    # Wait until every subject event committed so far has reached the subscriber.
                    count = (await self.sql(
                        "SELECT count(*) AS n FROM events WHERE stream_id LIKE 'subject:%'"))[0]["n"]
                    deadline, last, still = time.monotonic() + 30, -1, 0
                    while len(received) < count and time.monotonic() < deadline and still < 6:
                        await asyncio.sleep(0.5)
                        still = still + 1 if len(received) == last else 0  # 3 s without news: give up
                        last = len(received)
                    ready = (await client.get("/health/ready")).json()
            finally:
                await nc.close()
            assert window is not None
            samples, positions = [], []
            for receipt, payload in received:
                event = json.loads(payload)
                position = event["data"]["position"]
                positions.append(position)
                sent = dt.datetime.fromisoformat(event["time"]).timestamp()
                if window[0] <= sent <= window[1]:
                    samples.append((receipt - sent, receipt, position))
            receipts = {p: receipt for _, receipt, p in samples}
            lower = sorted(1000 * (receipts[p] - answered) for p, sent, answered in probes
                           if p in receipts and window[0] <= sent and answered <= window[1])
            rows = await self.sql("SELECT position, extract(epoch FROM recorded_at)::float8 AS at FROM events "
                                  "WHERE position = ANY($1::bigint[])", [p for _, _, p in samples])
            recorded = {row["position"]: row["at"] for row in rows}
            lags = sorted(1000 * x for x, _, _ in samples)
            lags_recorded = sorted(1000 * (receipt - recorded[p]) for _, receipt, p in samples if p in recorded)
            result.update({
                "stream": env["CONSENT_NATS_STREAM"], "subject_filter": f"{prefix}.subject.>",
                "messages": len(lags), "subject_events": count, "received": len(set(positions)),
                "missing": count - len(set(positions)), "duplicates": len(positions) - len(set(positions)),
                "lag_p50_ms": percentile(lags, 50), "lag_p90_ms": percentile(lags, 90),
                "lag_p99_ms": percentile(lags, 99), "lag_max_ms": lags[-1] if lags else None,
                "lag_recorded_p50_ms": percentile(lags_recorded, 50),
                "lag_recorded_p99_ms": percentile(lags_recorded, 99),
                "lag_recorded_max_ms": lags_recorded[-1] if lags_recorded else None,
                "probe_writes": len(lower), "lag_lower_p50_ms": percentile(lower, 50),
                "lag_lower_p99_ms": percentile(lower, 99), "lag_lower_max_ms": lower[-1] if lower else None,
                "relay": ready.get("relay"), "server_env": env, "service": self.server_revision,
                "write_rate_target": args.write_rate})
            self.results.setdefault("runs", {})["lag"] = result
            log(f"  lag: {len(lags):,} messages of the measured run; CloudEvent time to receipt p50 "
                f"{fmt(result['lag_p50_ms'], 2)} ms, p99 {fmt(result['lag_p99_ms'], 2)} ms, max "
                f"{fmt(result['lag_max_ms'], 1)} ms; {result['received']:,} of {count:,} subject events received")
            if result["missing"]:
                self.problems.append(f"run lag: {result['missing']} subject events never reached the subscriber")
        finally:
            await self.end_run()

    async def lag_probe(self, client: httpx.AsyncClient, subject: str, stop: asyncio.Event) -> list[tuple]:
        """Toggle a grant on one subject, one request at a time, until told to stop: (position, sent, answered)
        in wall-clock seconds for each write."""
        change = {"purpose": WRITE_KEY["purpose"], "partner": WRITE_KEY["partner"]}
        bodies = [{"changes": [{**change, "scopes": WRITE_KEY["scopes"], "action": "grant"}], "source": "web"},
                  {"changes": [{**change, "action": "withdraw"}], "source": "web"}]
        probes: list[tuple] = []
        while not stop.is_set():
            sent = time.time()
            answer = await self.expect(await client.post(f"/v1/subjects/{subject}/consents", headers=self.admin(),
                                                         json=bodies[len(probes) % 2]), 200)
            probes.append((answer["position"], sent, time.time()))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)
        return probes

    async def propagation_run(self) -> None:
        """Two replicas A and B: a write on A, then B's decision until it changes; then min_position."""
        args = self.args
        tag = secrets.token_hex(4)
        env = self.nats_env(tag)
        signing_key = secrets.token_urlsafe(32)
        samples = args.propagation_samples
        log(f"run propagation: servers A and B on one database and NATS stream {env['CONSENT_NATS_STREAM']}; "
            f"wrk writes on A at {args.propagation_connections} connections; {samples} probes, then {samples} "
            f"with min_position")
        try:
            await self.create_database()
            self.migrate()
            self.nats_streams.append(env["CONSENT_NATS_STREAM"])
            a = await self.start_server("A", env, signing_key)
            b = await self.spawn_server("B", env, signing_key)
            log(f"server B: pid {b.pid} on {b.base_url} (same database, stream and signing key)")
            probe = f"bench-probe-{tag}"
            question = {"subject_id": probe, "purpose": "marketing", "scopes": ["profile.email"], "partner": PARTNER}
            grant = {"changes": [{"purpose": "marketing", "partner": PARTNER, "scopes": ["profile.email"],
                                  "action": "grant"}], "source": "web", "evidence": EVIDENCE[0]}
            withdraw = {"changes": [{"purpose": "marketing", "partner": PARTNER, "action": "withdraw"}],
                        "source": "app", "evidence": EVIDENCE[1]}
            admin = self.admin()
            async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a, \
                    httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b:
                await self.seed_catalog(on_a)
                # B learns the catalog from the feed: wait until it knows the partner and the purpose.
                deadline = time.monotonic() + 30
                while True:
                    answer = await self.expect(await on_b.post("/v1/decisions", headers=admin, json=question), 200)
                    if answer["denied"] and answer["denied"][0]["reason"] == "no_consent":
                        break
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"B does not know the catalog after 30 s: {answer}")
                    await asyncio.sleep(0.1)
                roles = {}
                for name, client in (("A", on_a), ("B", on_b)):
                    ready = (await client.get("/health/ready")).json()
                    roles[name] = ready.get("relay", {}).get("leader")
                leader = ", ".join(name for name, lead in roles.items() if lead) or "none"
                log(f"  relay leader: {leader}")

                for attempt in range(3):
                    await self.wait_quiet("propagation")
                    result = await self.propagation_probe(a, b, on_a, on_b, probe, question, grant, withdraw)
                    other = result["cpu"].get("other_core_pct") or 0
                    if self.args.wait_quiet <= 0 or other <= 25 or attempt == 2:
                        break
                    log(f"  (run propagation disturbed: other processes used {other:.0f}% of a core; repeating it)")
            result.update({"probe_subject": probe, "relay_leader": leader, "server_env": env,
                           "service": self.server_revision})
            stale, timeouts = result["stale_with_min_position"], result["timeouts"]
            self.results.setdefault("runs", {})["propagation"] = result
            log(f"  propagation: p50 {fmt(result['propagation_p50_ms'], 2)} ms, p99 "
                f"{fmt(result['propagation_p99_ms'], 2)} ms, max {fmt(result['propagation_max_ms'], 1)} ms over "
                f"{samples} probes ({timeouts} timeouts); with min_position: {stale} stale of {samples}")
            if stale:
                self.problems.append(f"run propagation: {stale} stale answers with min_position, e.g. "
                                     f"{json.dumps(result['stale_examples'][0])}")
            if timeouts:
                self.problems.append(f"run propagation: {timeouts} probes saw no change on B within 5 s")
        finally:
            await self.end_run()

    async def propagation_probe(self, a: Server, b: Server, on_a: httpx.AsyncClient, on_b: httpx.AsyncClient,
                                probe: str, question: dict[str, Any], grant: dict[str, Any],
                                withdraw: dict[str, Any]) -> dict[str, Any]:
        """Background writes on A; probes toggling the probe subject's grant (it starts and ends withdrawn)."""
        args = self.args
        samples = args.propagation_samples
        admin = self.admin()
        load_args = argparse.Namespace(**{**vars(args), "write_connections": args.propagation_connections})
        script = lua_writes(load_args, self.admin_key) + lua_pacing(args.write_rate, args.propagation_connections)
        extra = {"B": b.pid, **self.nats_server_pid()}
        for name, client in (("A relay", on_a), ("B relay", on_b)):
            child = (await self.relay_child(client)).get("relay")
            if child:
                extra[name] = child
        meter = CpuMeter(a.pid, self.database, extra)
        load = asyncio.create_task(self.wrk("propagation-load", script, "/v1/subjects",
                                            args.propagation_connections, 3600))
        granted = False
        try:
            await asyncio.sleep(max(1.0, args.warmup))
            if load.done():
                await load  # it failed: raise its error
            if self.wrk_proc is not None:  # still running, so not in this process's children's usage
                meter.extra_pids["wrk"] = self.wrk_proc.pid
            meter.start()
            flips, polls, writes, timeouts, first_poll = [], [], [], 0, 0
            for _ in range(samples):
                body, expected = (withdraw, "deny") if granted else (grant, "permit")
                started = time.perf_counter()
                await self.expect(await on_a.post(f"/v1/subjects/{probe}/consents", headers=admin, json=body), 200)
                written = time.perf_counter()
                writes.append(1000 * (written - started))
                granted = not granted
                n = 0
                while True:
                    answer = await self.expect(await on_b.post("/v1/decisions", headers=admin, json=question), 200)
                    n += 1
                    if answer["decision"] == expected:
                        break
                    if time.perf_counter() - written > 5.0:
                        timeouts += 1
                        break
                flips.append(1000 * (time.perf_counter() - written))
                polls.append(n)
                first_poll += n == 1
            stale, behind, consistent = [], 0, []
            for _ in range(samples):
                body, expected = (withdraw, "deny") if granted else (grant, "permit")
                written = await self.expect(await on_a.post(f"/v1/subjects/{probe}/consents", headers=admin,
                                                            json=body), 200)
                granted = not granted
                started = time.perf_counter()
                answer = await self.expect(await on_b.post("/v1/decisions", headers=admin, json={
                    **question, "min_position": written["position"]}), 200)
                consistent.append(1000 * (time.perf_counter() - started))
                if answer["decision"] != expected:
                    stale.append({"position": written["position"], "expected": expected, "answer": answer})
                behind += answer["position"] < written["position"]
            cpu = meter.stop()
        finally:
            if self.wrk_proc is not None and self.wrk_proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    self.wrk_proc.send_signal(signal.SIGINT)  # wrk reports what it did so far
        result = await load
        self.flag_errors("propagation (background writes on A)", result)
        a.check_alive()
        b.check_alive()
        flips.sort()
        consistent.sort()
        writes.sort()
        result.update({
            "samples": samples,
            "propagation_p50_ms": percentile(flips, 50), "propagation_p90_ms": percentile(flips, 90),
            "propagation_p99_ms": percentile(flips, 99), "propagation_max_ms": flips[-1],
            "polls_mean": sum(polls) / len(polls), "changed_at_first_poll": first_poll, "timeouts": timeouts,
            "probe_write_p50_ms": percentile(writes, 50), "probe_write_p99_ms": percentile(writes, 99),
            "stale_with_min_position": len(stale), "stale_examples": stale[:3],
            "position_behind_min_position": behind,
            "min_position_p50_ms": percentile(consistent, 50), "min_position_p99_ms": percentile(consistent, 99),
            "min_position_max_ms": consistent[-1], "cpu": cpu,
            "background_connections": args.propagation_connections})
        return result

    # scale

    async def scale_run(self) -> None:
        args = self.args
        sizes = args.scale_subjects
        log(f"run scale: {', '.join(f'{n:,}' for n in sizes)} subjects, 10 consents each, bulk-seeded with COPY; "
            f"consent projections rebuild; decisions at {args.connections} and {args.latency_connections} "
            f"connections over random subjects")
        results = self.results.setdefault("runs", {}).setdefault("scale", {"sizes": {}})
        for n in sizes:
            started = time.monotonic()
            try:
                results["sizes"][str(n)] = await self.scale_one(n)
            finally:
                await self.end_run()
            results["sizes"][str(n)]["seconds_total"] = round(time.monotonic() - started, 1)
            log(f"  scale {n:,}: took {time.monotonic() - started:.0f} s")
        small, large = (results["sizes"][str(min(sizes))], results["sizes"][str(max(sizes))])
        results["smallest"], results["largest"] = min(sizes), max(sizes)
        results["rps_ratio"] = ratio(large["decisions"]["rps"], small["decisions"]["rps"])
        results["p99_ratio"] = ratio(large["latency"]["p99_ms"], small["latency"]["p99_ms"])
        results["p99_ratio_at_throughput"] = ratio(large["decisions"]["p99_ms"], small["decisions"]["p99_ms"])
        results["variant_ratios"] = {}
        for label, variant in large.get("variants", {}).items():
            base = small.get("variants", {}).get(label)
            if base is None:
                continue
            results["variant_ratios"][label] = row = {
                "rps_ratio": ratio(variant["decisions"]["rps"], base["decisions"]["rps"]),
                "p99_ratio": ratio(variant["latency"]["p99_ms"], base["latency"]["p99_ms"]),
                "p99_ratio_at_throughput": ratio(variant["decisions"]["p99_ms"], base["decisions"]["p99_ms"]),
                "rss_mb": (base["rss_mb"], variant["rss_mb"])}
            log(f"  {label}: decisions/s {fmt(row['rps_ratio'], 2)} of {small['subjects']:,}'s at "
                f"{large['subjects']:,} subjects, p99 at {args.latency_connections} connections "
                f"{fmt(row['p99_ratio'], 2)}x, at {args.connections} {fmt(row['p99_ratio_at_throughput'], 2)}x; "
                f"RSS {row['rss_mb'][0]} -> {row['rss_mb'][1]} MB")

    async def scale_one(self, n: int) -> dict[str, Any]:
        args = self.args
        width = subject_width(n)
        out: dict[str, Any] = {"subjects": n}
        await self.create_database()
        self.migrate()
        # The catalog through the API (its events in the log), then the server goes away for the bulk load.
        await self.start_server(f"scale-{n}-catalog")
        async with httpx.AsyncClient(base_url=self.base_url, timeout=30) as client:
            await self.seed_catalog(client)
        await self.stop_server()
        out["seed"] = await self.bulk_seed(n, width)
        out["rebuild"] = self.rebuild()
        if not args.scale_skip_checkpoints:
            out["checkpoints"] = self.checkpoint_backlog()
        if args.scale_verify:
            out["verify"] = self.audit_verify()
        # The rebuild leaves the new read tables without planner statistics; with autovacuum off (as
        # on the machine this bench was written on) they would stay so, and a batch of 1,000 subjects
        # is then read with a parallel sequential scan. Analyse them, as autovacuum would in time.
        autovacuum = (await self.sql("SHOW autovacuum"))[0][0]
        began = time.monotonic()
        if not args.scale_skip_analyze:
            await self.sql("ANALYZE subjects, consents")
        out["analyze"] = {"seconds": None if args.scale_skip_analyze else round(time.monotonic() - began, 1),
                          "autovacuum": autovacuum}
        log("  analyze: subjects and consents " + ("NOT analysed (--scale-skip-analyze)"
                                                    if args.scale_skip_analyze else
                                                    f"analysed in {out['analyze']['seconds']} s")
            + f" (the rebuild does not; autovacuum is {autovacuum} on this server)")
        counts = (await self.sql(
            "SELECT (SELECT count(*) FROM subjects) AS subjects, (SELECT count(*) FROM consents) AS consents, "
            "(SELECT count(*) FROM events) AS events, pg_database_size(current_database()) AS bytes"))[0]
        statuses = await self.sql("SELECT status, count(*) AS n FROM consents GROUP BY status ORDER BY status")
        out["read_models"] = {"subjects": counts["subjects"], "consents": counts["consents"],
                              "events": counts["events"], "database_mb": round(counts["bytes"] / 2**20),
                              "consents_by_status": {row["status"]: row["n"] for row in statuses}}
        by_status = ", ".join(f"{row['status']} {row['n']:,}" for row in statuses)
        log(f"  read models: {counts['subjects']:,} subjects, {counts['consents']:,} consents ({by_status}); "
            f"database {counts['bytes'] / 2**20:,.0f} MB")
        if counts["subjects"] != n or counts["consents"] != 10 * n:
            self.problems.append(f"run scale {n}: read models hold {counts['subjects']} subjects and "
                                 f"{counts['consents']} consents, expected {n} and {10 * n}")
        out["variants"] = {}
        for cache_size in args.scale_cache_size:
            for distribution in args.scale_distribution:
                label = f"cache {cache_size}, {distribution}"
                out["variants"][label] = await self.scale_variant(n, width, cache_size, distribution)
                await self.stop_server()
        first = next(iter(out["variants"].values()))  # the figures the summary and ratios use
        out.update({k: first[k] for k in ("cache_size", "decisions", "latency", "rss_mb", "rss_mb_started",
                                          "rss_mb_warm", "cache_warm_seconds", "answer_mix")})
        return out

    async def scale_variant(self, n: int, width: int, cache_size: int, distribution: str) -> dict[str, Any]:
        """A server with this cache size, its cache filled (with the most asked subjects under Zipf), then
        decisions over subjects drawn uniformly or by Zipf's law."""
        args = self.args
        scale_args = argparse.Namespace(**{**vars(args), "subjects": n})
        out: dict[str, Any] = {"cache_size": cache_size, "distribution": distribution}
        server = await self.start_server(f"scale-{n}-{cache_size}-{distribution}",
                                         {"CONSENT_SUBJECT_CACHE_SIZE": str(cache_size)})
        out["service"] = self.server_revision
        out["rss_mb_started"] = server.rss_mb()
        order = (lambda i: i) if distribution == "uniform" else (lambda rank: zipf_subject(rank, n))
        async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
            token = await self.partner_token(client)
            auth = {"Authorization": f"Bearer {token}"}
            # Fill the cache as a replica in service would be (every subject, or as many as it holds).
            warm = min(n, cache_size)
            began = time.monotonic()
            for first in range(0, warm, 1000):
                items = [{"subject_id": subject_id(args.subject_prefix, width, order(i)), "purpose": "marketing",
                          "scopes": ["profile.email"]} for i in range(first, min(first + 1000, warm))]
                await self.expect(await client.post("/v1/decisions/batch", headers=auth, json={"items": items}), 200)
            out["cache_warm_seconds"] = round(time.monotonic() - began, 2)
            out["rss_mb_warm"] = server.rss_mb()
            log(f"  cache {cache_size:,}, {distribution}: {warm:,} subjects read by batch decisions in "
                f"{out['cache_warm_seconds']} s; server RSS {out['rss_mb_started']} MB at start, "
                f"{out['rss_mb_warm']} MB after")
            rng = random.Random(args.seed + n)
            weighted = [(purpose, scopes) for weight, purpose, scopes in QUESTIONS for _ in range(weight)]
            answers: Counter[str] = Counter()
            for _ in range(args.sample):
                purpose, scopes = rng.choice(weighted)
                answer = await self.expect(await client.post("/v1/decisions", headers=auth, json={
                    "subject_id": subject_id(args.subject_prefix, width, rng.randrange(n)), "purpose": purpose,
                    "scopes": scopes}), 200)
                answers[answer["decision"]] += 1
            out["answer_mix"] = dict(answers)
            log("  answers: " + ", ".join(f"{k} {100 * v / args.sample:.0f}%" for k, v in answers.most_common())
                + f" (sample of {args.sample} single decisions)")
        tag = f"scale-{n}-{cache_size}-{distribution}"
        script = lua_decisions(scale_args, token, distribution)
        log(f"  decisions: {n:,} subjects, {distribution}, {args.connections} connections, {args.duration} s")
        out["decisions"] = await self.run_wrk(f"{tag}-decisions", script, "/v1/decisions", args.connections)
        log(f"  latency: {n:,} subjects, {distribution}, {args.latency_connections} connections, {args.duration} s")
        out["latency"] = await self.run_wrk(f"{tag}-latency", script, "/v1/decisions", args.latency_connections)
        out["rss_mb"] = server.rss_mb()
        log(f"  {n:,} (cache {cache_size:,}, {distribution}): {fmt(out['decisions']['rps'])} decisions/s at "
            f"{args.connections}, p99 {fmt(out['decisions']['p99_ms'], 2)} ms there, p99 "
            f"{fmt(out['latency']['p99_ms'], 2)} ms at {args.latency_connections}; server RSS {out['rss_mb']} MB")
        return out

    async def bulk_seed(self, n: int, width: int) -> dict[str, Any]:
        """N subjects x 10 consents as hash-chained events (bench/seed_scale.py), sent with COPY in
        chunks, each chunk computed while the previous one is copied. The events table's indexes are
        dropped for the load and built again."""
        args = self.args
        actor = f"admin:{hashlib.sha256(self.admin_key.encode()).hexdigest()[:12]}"
        conn = await asyncpg.connect(self.database_dsn)
        timings: dict[str, float] = {}
        try:
            await conn.execute("SET work_mem = '256MB'; SET maintenance_work_mem = '1GB'")
            base = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)  # the last sign-up 100 days ago
            began = time.monotonic()
            await conn.execute("""
                ALTER TABLE events DROP CONSTRAINT pk_events, DROP CONSTRAINT uq_events_event_id,
                    DROP CONSTRAINT uq_events_stream_version;
                DROP INDEX ix_events_transaction_id""")
            seeder = Seeder(args.subject_prefix, width, n, base, actor, EVIDENCE, args.seed)
            rows = 0
            pending = None  # the COPY of the previous chunk runs while this one is computed
            for first, last in chunks(0, n, args.scale_chunk):
                batch = await asyncio.to_thread(lambda a=first, b=last: list(seeder.subjects(a, b)))
                if pending is not None:
                    rows += await pending
                pending = asyncio.ensure_future(copy_rows(conn, batch))
                if n > args.scale_chunk:
                    log(f"  seed: {last:,} of {n:,} subjects computed, {rows:,} events copied, "
                        f"{time.monotonic() - began:.0f} s")
            if pending is not None:
                rows += await pending
            withdrawn = await copy_rows(conn, seeder.sorted_withdrawals())
            timings["insert"] = time.monotonic() - began
            began = time.monotonic()
            await conn.execute("""
                CREATE UNIQUE INDEX pk_events ON events (position);
                ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY USING INDEX pk_events;
                CREATE UNIQUE INDEX uq_events_event_id ON events (event_id);
                ALTER TABLE events ADD CONSTRAINT uq_events_event_id UNIQUE USING INDEX uq_events_event_id;
                CREATE UNIQUE INDEX uq_events_stream_version ON events (stream_id, stream_version);
                ALTER TABLE events ADD CONSTRAINT uq_events_stream_version
                    UNIQUE USING INDEX uq_events_stream_version;
                CREATE INDEX ix_events_transaction_id ON events (transaction_id, position)""")
            timings["indexes"] = time.monotonic() - began
            began = time.monotonic()
            await conn.execute("VACUUM (ANALYZE) events")
            timings["vacuum_analyze"] = time.monotonic() - began
        finally:
            await conn.close()
        total = sum(timings.values())
        log(f"  seed: {n:,} subjects, {rows + withdrawn:,} events ({rows:,} grants and objections, {withdrawn:,} "
            f"withdrawals) in {total:.1f} s: insert {timings['insert']:.1f} s, indexes {timings['indexes']:.1f} s, "
            f"vacuum analyze {timings['vacuum_analyze']:.1f} s")
        return {"events": rows + withdrawn, "grants_and_objections": rows, "withdrawals": withdrawn,
                "seconds": round(total, 1), **{f"{k}_seconds": round(v, 1) for k, v in timings.items()}}

    def audit_verify(self) -> dict[str, Any]:
        """`consent audit verify` over the seeded log: it must pass, and how fast it walks."""
        command = self.cli_command("audit", "verify")
        began = time.monotonic()
        done = subprocess.run(command, env=self.cli_env(), capture_output=True, text=True)
        wall = time.monotonic() - began
        text = done.stdout + done.stderr
        found = re.search(r"(\d+) events in (\d+) streams and (\d+) checkpoints verified in ([\d.]+) s "
                          r"\(([\d,]+) events/s\)", text)
        if done.returncode != 0 or found is None or "the log is intact" not in text:
            raise RuntimeError(f"consent audit verify failed ({done.returncode}):\n{text[-3000:]}")
        log(f"  audit verify: {found.group(0)} ({wall:.1f} s with the process start)")
        return {"events": int(found.group(1)), "streams": int(found.group(2)), "seconds": float(found.group(4)),
                "events_per_s": int(found.group(5).replace(",", "")), "wall_seconds": round(wall, 1),
                "output": found.group(0)}

    def cli_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
        env["CONSENT_DATABASE_URL"] = self.database_url
        return env

    @staticmethod
    def cli_command(*words: str) -> list[str]:
        cli = Path(sys.executable).parent / "consent"
        return [str(cli), *words] if cli.exists() else [sys.executable, "-m", "consent.cli", *words]

    def checkpoint_backlog(self) -> dict[str, Any]:
        """Checkpoint the bulk-seeded log, as a service writing it would have done every 10 s along the
        way. Else the first server started catches up on millions of events while it is measured (its
        checkpointer took most of a core through the 1,000,000-subject decision runs)."""
        code = ("import asyncio, os, time\n"
                "from consent.adapters.database import Database\n"
                "from consent.adapters.log_checkpoints import write_checkpoint\n"
                "from consent.adapters.sql_store import head_position\n"
                "async def main():\n"
                "    db = Database(os.environ['CONSENT_DATABASE_URL'])\n"
                "    began, events = time.monotonic(), 0\n"
                "    async with db.engine.connect() as conn:\n"
                "        head = await head_position(conn)\n"
                "        while (written := await write_checkpoint(conn, head)) is not None:\n"
                "            await conn.commit()\n"
                "            events += written.event_count\n"
                "    await db.dispose()\n"
                "    print(events, round(time.monotonic() - began, 1))\n"
                "asyncio.run(main())\n")
        done = subprocess.run([sys.executable, "-c", code], env=self.cli_env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"checkpointing the seeded log failed ({done.returncode}):\n{done.stderr[-3000:]}")
        events, seconds = done.stdout.split()
        log(f"  checkpoints: {int(events):,} events checkpointed in {seconds} s before the servers start")
        return {"events": int(events), "seconds": float(seconds)}

    def rebuild(self) -> dict[str, Any]:
        env = self.cli_env()
        command = self.cli_command("projections", "rebuild")
        began = time.monotonic()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        wall = time.monotonic() - began
        text = done.stdout + done.stderr
        found = re.search(r"(\d+) events in (\d+) streams replayed in ([\d.]+) s \(([\d,]+) events/s\)", text)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"consent projections rebuild failed ({done.returncode}):\n{text[-3000:]}")
        line = found.group(0)
        log(f"  rebuild: {line} ({wall:.1f} s with the process start)")
        return {"events": int(found.group(1)), "streams": int(found.group(2)), "seconds": float(found.group(3)),
                "events_per_s": int(found.group(4).replace(",", "")), "wall_seconds": round(wall, 1),
                "output": line, "command": "CONSENT_DATABASE_URL=... " + shlex.join(
                    [os.path.relpath(command[0]) if not os.path.relpath(command[0]).startswith("..")
                     else command[0], *command[1:]])}

    # --- the whole run ---------------------------------------------------------------------

    async def run(self) -> None:
        wanted = set(self.args.only)
        try:
            if wanted & set(RUNS):
                await self.main_part(wanted)
            for name, method in (("lag", self.lag_run), ("propagation", self.propagation_run),
                                 ("scale", self.scale_run)):
                if name in wanted:
                    started = time.monotonic()
                    await method()
                    log(f"run {name}: took {time.monotonic() - started:.0f} s")
        finally:
            await self.end_run()  # what a failed run left behind; nothing after a clean one
            shutil.rmtree(self.tmp, ignore_errors=True)

    async def stop_wrk(self) -> None:
        if self.wrk_proc is not None and self.wrk_proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.wrk_proc.kill()
            await self.wrk_proc.wait()

    async def main_part(self, wanted: set[str]) -> None:
        """The runs of RUNS: one server (or --url), seeded over HTTP."""
        args = self.args
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
            await self.stop_wrk()
            if self.server_pid is not None:
                self.results["server_rss_mb"] = self.server_rss_mb()
            if self.server is not None:
                self.results["server_log_tail"] = self.server_log_tail(20)
            await self.stop_server()
            await self.drop_database()
            if not own:
                self.server_pid = None

    def server_rss_mb(self) -> float | None:
        return process_rss_mb(self.server_pid)

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

    def add(name: str, value: float | None, target: float, higher: bool, what: str, exact: bool = False) -> None:
        if value is None:
            ok = None
        else:
            ok = value == target if exact else (value >= target if higher else value < target)
        out.append({"check": name, "value": value, "target": target, "higher_is_better": higher,
                    "ok": ok, "what": what, **({"exact": True} if exact else {})})

    get = lambda run, key: runs.get(run, {}).get(key)  # noqa: E731
    if any(name in runs for name in RUNS) or not any(name in runs for name in EXTRA_RUNS):
        add("decisions / ceiling", ratio(get("decisions", "rps"), get("ceiling", "rps")),
            TARGETS["decisions_vs_ceiling"], True, "single-decision rps over GET /health/live rps")
        add("decision p99 ms", get("latency", "p99_ms"), TARGETS["decision_p99_ms"], False,
            "single decisions at the latency connections")
        add("batch decisions/s", get("batch", "decisions_per_s"), TARGETS["batch_decisions_per_s"], True,
            "requests/s x batch size, one server process")
        add("writes / asyncpg", ratio(get("writes", "rps"), get("baseline", "rps")), TARGETS["writes_vs_baseline"],
            True, "consent writes rps over raw asyncpg tx/s")
        add("write p99 ms", get("writes", "p99_ms"), TARGETS["write_p99_ms"], False, "consent writes")
    if "lag" in runs:
        add("publish lag p99 ms", get("lag", "lag_p99_ms"), TARGETS["publish_lag_p99_ms"], False,
            "CloudEvent time to NATS receipt: an upper bound of commit to receipt")
    if "propagation" in runs:
        add("propagation p50 ms", get("propagation", "propagation_p50_ms"), TARGETS["propagation_p50_ms"], False,
            "A's write answered to B's first changed decision")
        add("propagation p99 ms", get("propagation", "propagation_p99_ms"), TARGETS["propagation_p99_ms"], False,
            "the same, p99")
        add("stale, min_position", get("propagation", "stale_with_min_position"),
            TARGETS["stale_with_min_position"], False, "B's next answer with min_position from A's write", exact=True)
    if "scale" in runs:
        scale = runs["scale"]
        small, large = scale.get("smallest"), scale.get("largest")
        add("scale rps ratio", scale.get("rps_ratio"), TARGETS["scale_rps_ratio"], True,
            f"decisions/s at {large:,} subjects over at {small:,}" if small else "decisions/s, largest over smallest")
        add("scale p99 ratio", scale.get("p99_ratio"), TARGETS["scale_p99_ratio"], False,
            f"decision p99 (latency connections) at {large:,} over at {small:,}" if small else "p99 ratio")
        largest = scale.get("sizes", {}).get(str(large), {})
        add("rebuild events/s", largest.get("rebuild", {}).get("events_per_s"), TARGETS["rebuild_events_per_s"],
            True, f"consent projections rebuild, {large:,} subjects" if large else "consent projections rebuild")
    return out


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def cpu_text(cpu: dict[str, Any], load: str = "wrk") -> str:
    parts = [f"server {fmt(cpu.get('server_core_pct'))}"]
    extra = cpu.get("extra_core_pct", {})
    parts += [f"{label} {fmt(value)}" for label, value in extra.items() if label != "wrk"]
    parts += [f"pg {fmt(cpu.get('postgres_core_pct'))}",
              f"{load} {fmt(extra['wrk'] if 'wrk' in extra else cpu.get('wrk_core_pct'))}",
              f"bench {fmt(cpu.get('bench_core_pct'))}", f"other {fmt(cpu.get('other_core_pct'))}"]
    return "cpu % of a core: " + ", ".join(parts)


def busy_warning(name: str, cpu: dict[str, Any], run: dict[str, Any] | None = None) -> list[str]:
    other = cpu.get("other_core_pct") or 0
    if other <= 15:
        return []
    if run is not None and (run.get("pg_sessions_opened") or 0) > run["connections"]:
        return [f"  (other {other:.0f}% during {name}: the server opened {run['pg_sessions_opened']} PostgreSQL "
                f"sessions, whose backends' CPU counts as other)"]
    return [f"  WARNING: other processes used {other:.0f}% of a core during {name}: figures are skewed "
            f"(rerun on a quiet machine)"]


def extra_sections(bench: Bench) -> list[str]:
    args = bench.args
    runs = bench.results.get("runs", {})
    lines: list[str] = []
    if "lag" in runs:
        r = runs["lag"]
        errors = r["non_2xx"] + r["socket_errors"]
        paced = f" paced near {r['write_rate_target']:g}/s" if r.get("write_rate_target") else ""
        lines += ["", f"publish lag (lag): POST .../consents, 1 change, {r['connections']} connections{paced}, "
                      f"{r['seconds']:.0f} s, server with CONSENT_NATS_URL={args.nats}; service {r.get('service')}",
                  f"  stream {r['stream']}, plain nats-py subscriber in this process on {r['subject_filter']}",
                  f"  writes: {fmt(r['rps'])} req/s, p50 {fmt(r['p50_ms'], 2)} ms, p99 {fmt(r['p99_ms'], 2)} ms, "
                  f"max {fmt(r['max_ms'], 1)} ms, {errors} errors; {cpu_text(r.get('cpu', {}))}; "
                  f"{r.get('pg_sessions_opened', '-')} PostgreSQL sessions opened during the run",
                  f"  lag, CloudEvent time to receipt:  p50 {fmt(r['lag_p50_ms'], 2)} ms, "
                  f"p90 {fmt(r['lag_p90_ms'], 2)} ms, p99 {fmt(r['lag_p99_ms'], 2)} ms, "
                  f"max {fmt(r['lag_max_ms'], 1)} ms over {r['messages']:,} messages "
                  f"(events of the measured {r['seconds']:.0f} s)",
                  f"  lag, recorded_at to receipt:      p50 {fmt(r['lag_recorded_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['lag_recorded_p99_ms'], 2)} ms, max {fmt(r['lag_recorded_max_ms'], 1)} ms "
                  f"(recorded_at read from the database by position after the run)",
                  f"  lag, answer to receipt (lower bound): p50 {fmt(r['lag_lower_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['lag_lower_p99_ms'], 2)} ms, max {fmt(r['lag_lower_max_ms'], 1)} ms over "
                  f"{r['probe_writes']} probe writes from this process, one at a time among the load (a write is "
                  f"answered after its commit; below 0: the message came before the answer)",
                  "  (the first two take times from before the write's statement commits: upper bounds of commit "
                  "to receipt;\n   `time` is occurred_at, taken before the write's transaction; recorded_at, just "
                  "before its statement)",
                  f"  received {r['received']:,} of the {r['subject_events']:,} subject events in the log "
                  f"(missing {r['missing']}, duplicates {r['duplicates']}); relay {r.get('relay')}"]
        lines += busy_warning("lag", r.get("cpu", {}), r)
    if "propagation" in runs:
        r = runs["propagation"]
        errors = r["non_2xx"] + r["socket_errors"]
        lines += ["", f"propagation (propagation): servers A and B, one database, one NATS stream, same signing key; "
                      f"relay leader {r['relay_leader']}; service {r.get('service')}",
                  f"  background on A: POST .../consents at {r['background_connections']} connections, "
                  f"{fmt(r['rps'])} req/s over {r['seconds']:.0f} s, p99 {fmt(r['p99_ms'], 2)} ms, {errors} errors",
                  f"  probe subject {r['probe_subject']}: grant/withdraw marketing for {PARTNER} on A (admin), "
                  f"then POST /v1/decisions on B (admin, partner {PARTNER}) in a loop",
                  f"  A's answer to B's first changed decision: p50 {fmt(r['propagation_p50_ms'], 2)} ms, "
                  f"p90 {fmt(r['propagation_p90_ms'], 2)} ms, p99 {fmt(r['propagation_p99_ms'], 2)} ms, "
                  f"max {fmt(r['propagation_max_ms'], 1)} ms over {r['samples']} probes",
                  f"    {r['polls_mean']:.1f} decisions on B a probe on average, changed at the first one in "
                  f"{r['changed_at_first_poll']}; {r['timeouts']} probes unchanged after 5 s; probe writes on A "
                  f"p50 {fmt(r['probe_write_p50_ms'], 2)} ms, p99 {fmt(r['probe_write_p99_ms'], 2)} ms",
                  f"  with min_position = A's answer's position: {r['stale_with_min_position']} stale answers of "
                  f"{r['samples']} (answer position below min_position: {r['position_behind_min_position']}); "
                  f"that answer took p50 {fmt(r['min_position_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['min_position_p99_ms'], 2)} ms, max {fmt(r['min_position_max_ms'], 1)} ms",
                  f"  {cpu_text(r.get('cpu', {}))} (server = A, during the probes)"]
        lines += busy_warning("propagation", r.get("cpu", {}))
    if "scale" in runs and runs["scale"].get("sizes"):
        scale = runs["scale"]
        sizes = scale["sizes"]
        first = next(iter(sizes.values()))
        lines += ["", f"scale (scale): 10 consents a subject bulk-seeded (COPY), read models by `consent projections "
                      f"rebuild`, subject cache {first['cache_size']:,}; decisions as {PARTNER} over random subjects"]
        header = (f"{'subjects':>10}{'events':>12}{'seed s':>8}{'rebuild/s':>11}{'rps@' + str(args.connections):>9}"
                  f"{'p99':>7}{'p50@' + str(args.latency_connections):>7}{'p99':>7}{'max':>7}{'err':>5}"
                  f"{'RSS MB start/warm/end':>23}{'other%':>8}{'total s':>8}")
        lines += [header, "-" * len(header)]
        for n, r in sizes.items():
            d, lat = r.get("decisions", {}), r.get("latency", {})
            if not d or not lat:
                continue
            errors = d["non_2xx"] + d["socket_errors"] + lat["non_2xx"] + lat["socket_errors"]
            other = max(d.get("cpu", {}).get("other_core_pct") or 0, lat.get("cpu", {}).get("other_core_pct") or 0)
            rss = f"{fmt(r.get('rss_mb_started'))}/{fmt(r.get('rss_mb_warm'))}/{fmt(r.get('rss_mb'))}"
            lines.append(f"{int(n):>10,}{r['seed']['events']:>12,}{r['seed']['seconds']:>8.1f}"
                         f"{r['rebuild']['events_per_s']:>11,}{fmt(d['rps']):>9}{fmt(d['p99_ms'], 1):>7}"
                         f"{fmt(lat['p50_ms'], 2):>7}{fmt(lat['p99_ms'], 2):>7}{fmt(lat['max_ms'], 1):>7}{errors:>5}"
                         f"{rss:>23}{fmt(other):>8}{fmt(r.get('seconds_total')):>8}")
        lines.append("  (seed s: INSERT ... SELECT, index builds and VACUUM ANALYZE; rebuild/s: events/s as "
                     "`consent projections rebuild` prints it;\n   RSS of the server: at start, after the cache was "
                     "filled by batch decisions, after the two runs)")
        for n, r in sizes.items():
            s, b = r["seed"], r["rebuild"]
            lines.append(f"  {int(n):,}: seed {s['events']:,} events in {s['seconds']} s "
                         f"(insert {s['insert_seconds']} s, indexes {s['indexes_seconds']} s, "
                         f"vacuum analyze {s['vacuum_analyze_seconds']} s); "
                         f"rebuild: {b['output']}; ANALYZE of the read models {fmt(r['analyze']['seconds'], 1)} s "
                         f"(autovacuum {r['analyze']['autovacuum']}); database {r['read_models']['database_mb']:,} MB; "
                         f"cache filled in {r['cache_warm_seconds']} s; answers {r['answer_mix']}; "
                         f"service {r.get('service')}")
            for key in ("decisions", "latency"):
                if key in r:
                    run = r[key]
                    cpu = run.get("cpu", {})
                    per_request = (None if cpu.get("server_core_pct") is None or not run["rps"]
                                   else 10_000 * cpu["server_core_pct"] / run["rps"])
                    lines += [f"  {int(n):,} {key} ({run['connections']} connections): {cpu_text(cpu)}; server "
                              f"{fmt(per_request)} us CPU a request; {run.get('pg_sessions_opened', '-')} "
                              f"PostgreSQL sessions opened"]
                    lines += busy_warning(f"scale {n} {key}", cpu, run)
        if len(sizes) > 1:
            lines.append(f"  ratios, {scale['largest']:,} over {scale['smallest']:,} subjects: decisions/s "
                         f"{fmt(scale['rps_ratio'], 2)}, p99 at {args.latency_connections} connections "
                         f"{fmt(scale['p99_ratio'], 2)}, p99 at {args.connections} connections "
                         f"{fmt(scale['p99_ratio_at_throughput'], 2)}")
    return lines


def main_table(args: argparse.Namespace, runs: dict[str, Any]) -> list[str]:
    lines = [""]
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
    return lines


def report(bench: Bench, meta: dict[str, Any]) -> str:
    args = bench.args
    runs = bench.results.get("runs", {})
    lines = ["", "=" * 108, "consent service benchmark", "=" * 108]
    for key in ("date", "command", "service", "machine", "cpu", "load_generator", "server", "target", "postgres"):
        if meta.get(key):
            lines.append(f"{key:<15} {meta[key]}")
    lines.append(f"{'workload':<15} {args.subjects} subjects (prefix {args.subject_prefix!r}), "
                 f"{args.duration} s a run after {args.warmup} s warm-up, seed {args.seed}")
    if any(name in runs for name in RUNS):
        lines += main_table(args, runs)
    lines += extra_sections(bench)
    lines.append("")
    header = f"{'check':<24}{'measured':>14}{'target':>14}  {'result':<8} what"
    lines += [header, "-" * 108]
    for v in verdicts(runs):
        higher = v["higher_is_better"]
        digits = (2 if "/" in v["check"] and "decisions/s" not in v["check"] and "events/s" not in v["check"]
                  or "ms" in v["check"] or "ratio" in v["check"] else 0)
        target = ("= " if v.get("exact") else ">= " if higher else "< ") + fmt(v["target"], digits)
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
    parser.add_argument("--only", default=",".join(RUNS),
                        help=f"comma list of runs among {', '.join(RUNS)} (the default), and {', '.join(EXTRA_RUNS)} "
                             f"(only when named)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222",
                        help="NATS server with JetStream for lag and propagation (default %(default)s); each run "
                             "uses a stream BENCH_<random> and subjects bench<random>.consent.v1.>, deleted at the end")
    parser.add_argument("--propagation-samples", type=int, default=200,
                        help="probes of the propagation run, and as many with min_position (default %(default)s)")
    parser.add_argument("--propagation-connections", type=int, default=8,
                        help="wrk connections writing on server A during the propagation run (default %(default)s)")
    parser.add_argument("--relay", choices=("inline", "process"), default=None,
                        help="CONSENT_RELAY of the lag and propagation servers (default: unset, the service's default)")
    parser.add_argument("--write-rate", type=float, default=None, metavar="PER_SECOND",
                        help="lag and propagation: pace the write load near this many writes/s (wrk delay(), "
                             "jittered) instead of as fast as the server answers; the achieved rate is reported")
    parser.add_argument("--scale-subjects", default="10000,1000000",
                        help="comma list of subject counts for the scale run (default %(default)s)")
    parser.add_argument("--scale-cache-size", default="100000",
                        help="comma list of CONSENT_SUBJECT_CACHE_SIZE values: a server for each on every seeded "
                             "size (default %(default)s, the service's default)")
    parser.add_argument("--scale-distribution", default="uniform",
                        help="comma list of how the decisions pick subjects: uniform, zipf (s = 1.1; the cache "
                             "is then filled with the most asked subjects) (default %(default)s)")
    parser.add_argument("--scale-verify", action="store_true",
                        help="scale: time `consent audit verify` over each seeded log (it must pass)")
    parser.add_argument("--scale-skip-analyze", action="store_true",
                        help="scale run: do not ANALYZE subjects and consents after the rebuild (which does not)")
    parser.add_argument("--scale-skip-checkpoints", action="store_true",
                        help="scale run: leave the seeded log uncheckpointed (the first server then catches up)")
    parser.add_argument("--scale-chunk", type=int, default=20_000,
                        help="subjects a COPY in the scale run's seeder (default %(default)s)")
    parser.add_argument("--sample", type=int, default=300, help="single decisions sampled over HTTP to show the "
                                                                "answer mix (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload (default %(default)s)")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for other processes on the machine to use "
                             "under 15%% of a core, and repeat (twice at most) a run they disturbed "
                             "(default: do not wait; other load is reported either way)")
    parser.add_argument("--server-workers", type=int, default=1, metavar="N",
                        help="uvicorn worker processes of each server the bench starts (default 1: the figures "
                             "are per server process)")
    parser.add_argument("--server-env", metavar="NAME=VALUE", action="append", default=[],
                        help="a setting for every server the bench starts, e.g. "
                             "CONSENT_WRITE_CACHE_SIZE=0 (repeatable)")
    parser.add_argument("--server-log", metavar="PATH", help="keep the started server's output in PATH "
                                                             "(default: a temporary file, its tail printed)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(RUNS) - set(EXTRA_RUNS))
    if unknown:
        parser.error(f"--only: unknown runs {', '.join(unknown)}; choose among {', '.join(RUNS + EXTRA_RUNS)}")
    args.only = only
    if args.url and set(only) & set(EXTRA_RUNS):
        parser.error(f"--only {', '.join(x for x in EXTRA_RUNS if x in only)}: these runs start their own servers, "
                     f"not with --url")
    try:
        args.scale_subjects = sorted({int(x.replace("_", "")) for x in args.scale_subjects.split(",") if x.strip()})
        args.scale_cache_size = [int(x.replace("_", "")) for x in args.scale_cache_size.split(",") if x.strip()]
    except ValueError:
        parser.error("--scale-subjects takes a comma list of numbers")
    args.scale_distribution = [x.strip() for x in args.scale_distribution.split(",") if x.strip()]
    if not set(args.scale_distribution) <= {"uniform", "zipf"} or not args.scale_distribution:
        parser.error("--scale-distribution takes a comma list of uniform, zipf")
    if not args.scale_cache_size or min(args.scale_cache_size) < 1:
        parser.error("--scale-cache-size takes a comma list of positive numbers")
    if not args.scale_subjects or min(args.scale_subjects) < 1 or args.scale_chunk < 1:
        parser.error("--scale-subjects and --scale-chunk must be positive")
    if args.propagation_samples < 1 or args.propagation_connections < 1:
        parser.error("--propagation-samples and --propagation-connections must be positive")
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
        meta["server"] = " ".join(["CONSENT_PARTNER_RATE_LIMIT=0", *args.server_env, re.sub(
            r"--port \d+", "--port <free port>", shlex.join([launcher, *bench.server_command[1:]]))])
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
