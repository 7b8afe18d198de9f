"""The wrk Lua scripts: each varies the subject and the question per request and prints its figures
(latency percentiles, non-2xx statuses) as one `BENCH_RESULT {json}` line at the end."""

from __future__ import annotations

import argparse
import json

from consentbench.workload import QUESTIONS, WRITE_KEY, subject_width


def lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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
