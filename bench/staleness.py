#!/usr/bin/env python3
"""The staleness bound between replicas: the time from a withdrawal's acknowledgement on replica A to a
deny on replica B, under a background write load, and what `min_position` guarantees.

    .venv/bin/python bench/staleness.py                              # 0, 300 and 1,000 writes/s
    .venv/bin/python bench/staleness.py --rates 300 --probes 100 --json s.json
    .venv/bin/python bench/staleness.py --nats-failure --rates 300   # 3-node cluster, stream leader killed

A scratch PostgreSQL database (migrated, dropped at the end), two `consent serve` replicas A and B on it with
one NATS stream of their own (BENCH_<random>, subjects bench<random>.consent.v1, deleted at the end; with
--nats-failure a 3-node cluster from scripts/nats-cluster.sh with CONSENT_NATS_REPLICAS=3, stopped at the
end), the same keys, CONSENT_PARTNER_RATE_LIMIT=0 and CONSENT_ACCESS_LOG=0.

For every rate of --rates: a load process (this script with --load-worker) writes at that rate, paced open
loop (each request has its due time; its latency counts from then), spread over A and B and over many
subjects (grant, then withdraw, in turn), on --connections keep-alive connections a replica. After a warm-up,
--probes probes, each on a fresh subject: grant marketing for acme on A, ask B until it permits (then B holds
the subject), withdraw on A, and from A's 200 ask B `POST /v1/decisions` (no min_position) in a tight loop
until it denies: that time is the staleness. Then --min-position-probes probes ask B once, with min_position
= the position of A's answer, after the grant and after the withdrawal: such an answer must never be stale.
The rate achieved over the probes' window is reported, as is what the load process could not send.

--nats-failure: after --failure-after seconds of probes the stream's leader (a nats-server of the cluster)
is killed with SIGKILL and started again --failure-down seconds later; probes run --probe-concurrency at a
time (several subjects), and are reported by when their withdrawal was acknowledged: before the kill, while
the node was down, in the --recovery seconds after its restart, and after.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from consentbench.cpu_meter import CpuMeter  # noqa: E402
from consentbench.figures import fmt, log, percentile  # noqa: E402
from consentbench.machine import cpu_model, free_port, listening_pid, service_revision  # noqa: E402
from consentbench.workload import EVIDENCE, PARTNER, PARTNERS, PURPOSES, SCOPES  # noqa: E402
from scratch import scratch_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = ROOT / "scripts" / "nats-cluster.sh"
NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"
SCOPE = "profile.email"


# --- a small HTTP/1.1 keep-alive client: cheap enough to pace 1,000 writes/s from one core -------------

class Http:
    """One keep-alive connection to one server; JSON in, (status, parsed body) out."""

    def __init__(self, base_url: str, admin_key: str) -> None:
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.auth = f"Authorization: Bearer {admin_key}\r\n".encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = 0.0

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None

    async def _send(self, method: str, path: str, body: bytes, extra: bytes) -> tuple[int, bytes]:
        if self.writer is None or time.monotonic() - self.used > 1.0:  # servers close idle connections
            await self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                          b"%s%s\r\n%s" % (method.encode(), path.encode(), self.host.encode(), len(body), self.auth,
                                           extra, body))
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                raise RuntimeError("chunked answers are not expected")
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        payload = await self.reader.readexactly(length) if length else b""
        self.used = time.monotonic()
        if close:
            await self.close()
        return status, payload

    async def post(self, path: str, document: Any, extra: bytes = b"", retry: bool = True) -> tuple[int, Any]:
        body = json.dumps(document).encode()
        try:
            status, payload = await self._send("POST", path, body, extra)
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            if not retry:
                raise
            status, payload = await self._send("POST", path, body, extra)
        return status, json.loads(payload) if payload else None


def change(action: str, purpose: str = "marketing") -> dict[str, Any]:
    item: dict[str, Any] = {"purpose": purpose, "partner": PARTNER, "action": action}
    if action == "grant":
        item["scopes"] = [SCOPE]
    return {"changes": [item], "source": "web" if action == "grant" else "app",
            "evidence": EVIDENCE[0 if action == "grant" else 1]}


def question(subject: str, min_position: int | None = None) -> dict[str, Any]:
    asked: dict[str, Any] = {"subject_id": subject, "purpose": "marketing", "scopes": [SCOPE], "partner": PARTNER}
    if min_position is not None:
        asked["min_position"] = min_position
    return asked


# --- the load process --------------------------------------------------------------------------------

async def load_worker(config: dict[str, Any]) -> dict[str, Any]:
    """Writes at config['rate'] a second, open loop, until SIGINT or SIGTERM; returns what it did."""
    rate, urls, key = config["rate"], config["urls"], config["admin_key"]
    subjects, prefix = config["subjects"], config["prefix"]
    pools: list[asyncio.Queue[Http]] = []
    for url in urls:
        pool: asyncio.Queue[Http] = asyncio.Queue()
        for _ in range(config["connections"]):
            pool.put_nowait(Http(url, key))
        pools.append(pool)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    granted = [False] * subjects
    busy: set[int] = set()
    answered: list[tuple[float, float]] = []  # (wall time of a 200, ms from its due time: waits included)
    statuses: dict[str, int] = {}
    counts = {"due": 0, "sent": 0, "skipped_busy_subject": 0, "dropped_backlog": 0, "errors": 0}
    backlog = 0
    max_backlog = config["connections"] * len(urls) * 8
    tasks: set[asyncio.Task] = set()

    async def one(i: int, due: float) -> None:
        nonlocal backlog
        pool = pools[i % len(pools)]
        conn = await pool.get()
        try:
            action = "withdraw" if granted[i] else "grant"
            status, _ = await conn.post(f"/v1/subjects/{prefix}{i:06d}/consents", change(action), retry=False)
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == 200:
                granted[i] = not granted[i]
                answered.append((round(time.time(), 4), round(1000 * (time.perf_counter() - due), 3)))
        except Exception as error:  # noqa: BLE001 - counted; the load goes on
            counts["errors"] += 1
            statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
            await conn.close()
        finally:
            pool.put_nowait(conn)
            busy.discard(i)
            backlog -= 1

    next_subject = 0
    started = time.perf_counter()
    wall_started = time.time()
    if rate > 0:
        while not stop.is_set():
            now = time.perf_counter()
            due_now = int((now - started) * rate)
            while counts["due"] < due_now:
                due = started + counts["due"] / rate
                counts["due"] += 1
                if backlog >= max_backlog:
                    counts["dropped_backlog"] += 1
                    continue
                i = next_subject
                next_subject = (next_subject + 1) % subjects
                if i in busy:
                    counts["skipped_busy_subject"] += 1
                    continue
                busy.add(i)
                backlog += 1
                counts["sent"] += 1
                task = asyncio.create_task(one(i, due))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await asyncio.sleep(0.001)
    else:
        await stop.wait()
    if tasks:
        await asyncio.wait(tasks, timeout=10)
    for pool in pools:
        while not pool.empty():
            await pool.get_nowait().close()
    return {"rate": rate, "started": wall_started, "stopped": time.time(), **counts, "statuses": statuses,
            "answered": answered}


def run_load_worker(raw: str) -> int:
    config = json.loads(raw)
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        result = runner.run(load_worker(config))
    print("LOAD_RESULT " + json.dumps(result), flush=True)
    return 0


# --- replicas, NATS ---------------------------------------------------------------------------------

class Replica:
    def __init__(self, label: str, popen: subprocess.Popen, url: str, log_path: Path) -> None:
        self.label, self.popen, self.url, self.log = label, popen, url, log_path

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


async def start_replica(label: str, env: dict[str, str], tmp: Path) -> Replica:
    port = free_port()
    log_path = tmp / f"replica-{label}.log"
    with open(log_path, "wb") as out:
        popen = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--host", "127.0.0.1",
                                  "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
    replica = Replica(label, popen, f"http://127.0.0.1:{port}", log_path)
    return replica


async def wait_ready(replica: Replica, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    parts = urllib.parse.urlsplit(replica.url)
    while True:
        if replica.popen.poll() is not None:
            raise RuntimeError(f"replica {replica.label} exited ({replica.popen.returncode}):\n{replica.tail()}")
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, ValueError):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
            writer.write(b"GET /health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            writer.close()
            if int(head[9:12]) == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"replica {replica.label} not ready after {timeout:.0f} s:\n{replica.tail()}")
        await asyncio.sleep(0.2)


async def get_json(url: str, path: str) -> Any:
    parts = urllib.parse.urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    return json.loads(data.split(b"\r\n\r\n", 1)[1])


class Cluster:
    """scripts/nats-cluster.sh on free ports, in a directory of its own."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.urls: list[str] = []

    def start(self) -> None:
        base = free_base()
        done = subprocess.run([str(CLUSTER_SCRIPT), "start", str(self.directory), str(base)], capture_output=True,
                              text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"nats-cluster.sh start failed: {done.stderr}")
        self.urls = done.stdout.strip().split(",")

    def pid(self, node: str) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.directory / node / "nats.pid").read_text())
        return None

    def restart(self, node: str) -> None:
        folder = self.directory / node
        subprocess.Popen([NATS_SERVER, "-c", str(folder / "nats.conf"), "-l", str(folder / "nats.log"),
                          "-P", str(folder / "nats.pid")], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        subprocess.run([str(CLUSTER_SCRIPT), "stop", str(self.directory)], timeout=60, check=False)


def free_base() -> int:
    """A base port whose 3 client and 3 cluster ports (base..base+2, base+100..base+102) are free."""
    import socket
    for _ in range(50):
        base = free_port()
        if base < 60000:
            ok = True
            for offset in (1, 2, 100, 101, 102):
                with socket.socket() as sock:
                    try:
                        sock.bind(("127.0.0.1", base + offset))
                    except OSError:
                        ok = False
            if ok:
                return base
    raise RuntimeError("no free ports for the NATS cluster")


async def nats_request(servers: list[str], action: str, stream: str, attempts: int = 10) -> Any:
    import nats
    nc = await nats.connect(servers=servers, connect_timeout=5, max_reconnect_attempts=2)
    try:
        js = nc.jetstream(timeout=10)
        for attempt in range(attempts):
            try:
                if action == "delete":
                    return await js.delete_stream(stream)
                return await js.stream_info(stream)
            except Exception:  # noqa: BLE001 - an election in progress, a busy machine
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(1.0)
    finally:
        await nc.close()


# --- probes -----------------------------------------------------------------------------------------

async def until(http: Http, subject: str, expected: str, since: float, timeout: float) -> tuple[float | None, int]:
    """Ask B until it answers `expected`: (ms since `since`, or None after `timeout` s; the number of asks)."""
    asks = 0
    while True:
        status, answer = await http.post("/v1/decisions", question(subject))
        asks += 1
        if status != 200:
            raise RuntimeError(f"B answered {status}: {answer}")
        if answer["decision"] == expected:
            return 1000 * (time.perf_counter() - since), asks
        if time.perf_counter() - since > timeout:
            return None, asks


async def write(http: Http, subject: str, action: str) -> dict[str, Any]:
    key = f"Idempotency-Key: stale-{subject}-{action}\r\n".encode()  # a retry applies once
    status, answer = await http.post(f"/v1/subjects/{subject}/consents", change(action), extra=key)
    if status != 200:
        raise RuntimeError(f"A answered {status} to {action} {subject}: {answer}")
    return answer


async def staleness_probes(a_url: str, b_url: str, key: str, tag: str, count: int, concurrency: int,
                           timeout: float, deadline: float, until_done: asyncio.Task | None = None,
                           gap: float = 0.0) -> list[dict[str, Any]]:
    """count probes (fewer if the deadline passes), `concurrency` at a time, each on a fresh subject; with
    until_done, as many as fit until that task ends (a pause of `gap` s between two probes of a prober)."""
    results: list[dict[str, Any]] = []
    numbers = iter(range(10**6 if until_done is not None else count))

    async def prober() -> None:
        on_a, on_b = Http(a_url, key), Http(b_url, key)
        try:
            for k in numbers:
                if time.monotonic() > deadline or (until_done is not None and until_done.done()):
                    return
                if gap:
                    await asyncio.sleep(gap)
                subject = f"probe-{tag}-{k:05d}"
                started = time.perf_counter()
                await write(on_a, subject, "grant")
                granted_ms, _ = await until(on_b, subject, "permit", time.perf_counter(), timeout)
                await write(on_a, subject, "withdraw")
                acked, acked_wall = time.perf_counter(), time.time()
                stale_ms, asks = await until(on_b, subject, "deny", acked, timeout)
                results.append({"subject": subject, "acked_at": acked_wall, "stale_ms": stale_ms, "asks": asks,
                                "grant_seen_ms": granted_ms, "probe_ms": 1000 * (time.perf_counter() - started)})
        finally:
            await on_a.close()
            await on_b.close()

    await asyncio.gather(*(prober() for _ in range(concurrency)))
    return results


async def min_position_probes(a_url: str, b_url: str, key: str, tag: str, count: int,
                              deadline: float, until_done: asyncio.Task | None = None) -> dict[str, Any]:
    """Grant on A, B once with min_position; withdraw on A, B once with min_position. Stale answers counted.
    With until_done: as many as fit until that task ends."""
    on_a, on_b = Http(a_url, key), Http(b_url, key)
    stale = {"grant": 0, "withdraw": 0}
    examples: list[Any] = []
    latencies: list[float] = []
    done = 0
    try:
        for k in range(10**6 if until_done is not None else count):
            if time.monotonic() > deadline or (until_done is not None and until_done.done()):
                break
            subject = f"minpos-{tag}-{k:05d}"
            for action, expected in (("grant", "permit"), ("withdraw", "deny")):
                written = await write(on_a, subject, action)
                started = time.perf_counter()
                status, answer = await on_b.post("/v1/decisions", question(subject, written["position"]))
                latencies.append(1000 * (time.perf_counter() - started))
                if status != 200:
                    raise RuntimeError(f"B answered {status} with min_position: {answer}")
                if answer["decision"] != expected:
                    stale[action] += 1
                    examples.append({"subject": subject, "position": written["position"], "answer": answer})
            done += 1
    finally:
        await on_a.close()
        await on_b.close()
    latencies.sort()
    return {"probes": done, "stale_after_grant": stale["grant"], "stale_after_withdraw": stale["withdraw"],
            "examples": examples[:3], "p50_ms": percentile(latencies, 50) if latencies else None,
            "p99_ms": percentile(latencies, 99) if latencies else None,
            "max_ms": latencies[-1] if latencies else None}


def summary(probes: list[dict[str, Any]]) -> dict[str, Any]:
    values = sorted(p["stale_ms"] for p in probes if p["stale_ms"] is not None)
    grants = sorted(p["grant_seen_ms"] for p in probes if p["grant_seen_ms"] is not None)
    return {"probes": len(probes), "timeouts": sum(p["stale_ms"] is None for p in probes),
            "first_ask_denied": sum(p["asks"] == 1 for p in probes),
            "p50_ms": percentile(values, 50) if values else None, "p90_ms": percentile(values, 90) if values else None,
            "p99_ms": percentile(values, 99) if values else None, "max_ms": values[-1] if values else None,
            "grant_seen_p50_ms": percentile(grants, 50) if grants else None,
            "grant_seen_p99_ms": percentile(grants, 99) if grants else None}


# --- one level --------------------------------------------------------------------------------------

async def level(args: argparse.Namespace, rate: float, a: Replica, b: Replica, key: str, database: str,
                cluster: Cluster | None, stream: str, nats_servers: list[str]) -> dict[str, Any]:
    tag = secrets.token_hex(3)
    config = {"rate": rate, "urls": [a.url, b.url], "admin_key": key, "subjects": max(300, int(rate * 3)),
              "prefix": f"load-{tag}-", "connections": args.connections}
    loader = subprocess.Popen([sys.executable, __file__, "--load-worker", json.dumps(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    result: dict[str, Any] = {"target_rate": rate}
    try:
        await asyncio.sleep(args.warmup)
        if loader.poll() is not None:
            raise RuntimeError(f"the load process ended: {loader.stderr.read() if loader.stderr else ''}")
        extra = {"B": b.popen.pid, "load": loader.pid}
        for label, url in (("A relay", a.url), ("B relay", b.url)):
            with contextlib.suppress(Exception):
                pid = (await get_json(url, "/health/ready")).get("relay", {}).get("pid")
                if pid:
                    extra[label] = pid
        if cluster is None:
            pid = listening_pid(int(urllib.parse.urlsplit(args.nats).port or 4222))
            if pid:
                extra["nats-server"] = pid
        meter = CpuMeter(a.popen.pid, database, extra)
        meter.start()
        window_start = time.time()
        deadline = time.monotonic() + args.level_seconds
        chaos_task = None
        if cluster is not None:
            chaos_task = asyncio.create_task(chaos(args, cluster, stream, nats_servers, result))
            deadline = time.monotonic() + args.failure_after + args.failure_down + args.recovery + args.level_seconds
        probing = staleness_probes(a.url, b.url, key, f"{tag}", args.probes, args.probe_concurrency,
                                   args.probe_timeout, deadline, chaos_task, args.probe_gap if cluster else 0)
        if chaos_task is not None:
            # min_position answers through the failure too, on subjects of their own
            probes, result["min_position_during_failure"] = await asyncio.gather(probing, min_position_probes(
                a.url, b.url, key, f"{tag}-f", 0, deadline, chaos_task))
            await chaos_task  # the node is back before the min_position probes
        else:
            probes = await probing
        minpos = await min_position_probes(a.url, b.url, key, tag, args.min_position_probes,
                                           time.monotonic() + args.level_seconds)
        window_end = time.time()
        result["cpu"] = meter.stop()
    finally:
        if loader.poll() is None:
            loader.send_signal(signal.SIGINT)
        try:
            out, err = loader.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            loader.kill()
            out, err = loader.communicate()
    line = next((x for x in out.splitlines() if x.startswith("LOAD_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"the load process gave no result: {err[-2000:]}")
    load = json.loads(line[len("LOAD_RESULT "):])
    inside = sorted(ms for at, ms in load.pop("answered") if window_start <= at <= window_end)
    achieved = len(inside) / (window_end - window_start) if rate > 0 else None
    load.update(window_answers=len(inside), latency_p50_ms=percentile(inside, 50) if inside else None,
                latency_p99_ms=percentile(inside, 99) if inside else None,
                latency_max_ms=inside[-1] if inside else None)
    result.update({"window_s": round(window_end - window_start, 1), "achieved_rate": achieved, "load": load,
                   "staleness": summary(probes), "min_position": minpos, "probes_raw": probes})
    if cluster is not None and "killed_at" in result:
        killed, restarted = result["killed_at"], result["restarted_at"]
        recovered = restarted + args.recovery
        groups = {"before the kill": [p for p in probes if p["acked_at"] < killed],
                  "node down": [p for p in probes if killed <= p["acked_at"] < restarted],
                  f"{args.recovery:g} s after restart": [p for p in probes if restarted <= p["acked_at"] < recovered],
                  "after": [p for p in probes if p["acked_at"] >= recovered]}
        result["phases"] = {name: summary(group) for name, group in groups.items()}
    return result


async def chaos(args: argparse.Namespace, cluster: Cluster, stream: str, servers: list[str],
                result: dict[str, Any]) -> None:
    await asyncio.sleep(args.failure_after)
    info = await nats_request(servers, "info", stream)
    leader = info.cluster.leader
    pid = cluster.pid(leader)
    if pid is None:
        raise RuntimeError(f"no pid for the stream leader {leader}")
    os.kill(pid, signal.SIGKILL)
    result.update(killed_at=time.time(), killed=leader)
    log(f"  killed {leader} (pid {pid}), the leader of stream {stream}")
    await asyncio.sleep(args.failure_down)
    cluster.restart(leader)
    result["restarted_at"] = time.time()
    log(f"  restarted {leader} after {args.failure_down:g} s")
    await asyncio.sleep(args.recovery)
    with contextlib.suppress(Exception):
        result["leader_after"] = (await nats_request(servers, "info", stream)).cluster.leader


# --- the run ----------------------------------------------------------------------------------------

async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="consent-staleness-"))
    tag = secrets.token_hex(4)
    stream, prefix = f"BENCH_{tag.upper()}", f"bench{tag}.consent.v1"
    key = secrets.token_urlsafe(24)
    cluster: Cluster | None = None
    replicas: list[Replica] = []
    out: dict[str, Any] = {"levels": []}
    try:
        if args.nats_failure:
            cluster = Cluster(tmp / "nats")
            cluster.start()
            servers = cluster.urls
            log(f"nats: 3-node cluster {','.join(servers)} in {cluster.directory}")
        else:
            servers = [args.nats]
        async with scratch_database(args.postgres, "consent_staleness") as (dsn, _database):
            name = urllib.parse.urlsplit(dsn).path.lstrip("/")
            url = "postgresql+asyncpg" + dsn[len("postgresql"):]
            log(f"database: {name} (migrated)")
            from consentbench.harness import SHARED_KEYS
            env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
            env.update(SHARED_KEYS, CONSENT_DATABASE_URL=url, CONSENT_ADMIN_KEYS=key,
                       CONSENT_TOKEN_SIGNING_KEY=base64.b64encode(secrets.token_bytes(32)).decode(),
                       CONSENT_PARTNER_RATE_LIMIT="0", CONSENT_ACCESS_LOG="0", CONSENT_NATS_URL=",".join(servers),
                       CONSENT_NATS_STREAM=stream, CONSENT_NATS_SUBJECT_PREFIX=prefix,
                       CONSENT_NATS_REPLICAS="3" if cluster else "1")
            if args.relay:
                env["CONSENT_RELAY"] = args.relay
            env.update(dict(setting.split("=", 1) for setting in args.server_env))
            out["replica_env"] = {k: v for k, v in env.items() if k.startswith("CONSENT_") and k not in SHARED_KEYS
                                  and k not in ("CONSENT_ADMIN_KEYS", "CONSENT_TOKEN_SIGNING_KEY",
                                                "CONSENT_DATABASE_URL")}
            for label in ("A", "B"):
                replicas.append(await start_replica(label, env, tmp))
            for replica in replicas:
                await wait_ready(replica)
            a, b = replicas
            log(f"replicas: A pid {a.popen.pid} on {a.url}, B pid {b.popen.pid} on {b.url} (consent serve)")
            await seed(a, b, key)
            roles = {}
            for replica in replicas:
                roles[replica.label] = (await get_json(replica.url, "/health/ready")).get("relay", {}).get("leader")
            out["relay_leader"] = ", ".join(k for k, v in roles.items() if v) or "none"
            log(f"relay leader: {out['relay_leader']}")
            if cluster is not None:
                info = await nats_request(servers, "info", stream)
                log(f"stream {stream}: {info.config.num_replicas} replicas, leader {info.cluster.leader}")
            for rate in args.rates:
                what = (f"probes until {args.recovery:g} s after the node's restart, min_position probes beside them"
                        if cluster else f"{args.probes} probes")
                log(f"level {rate:g} writes/s: warm-up {args.warmup:g} s, {what} ({args.probe_concurrency} at a "
                    f"time), then {args.min_position_probes} with min_position")
                result = await level(args, rate, a, b, key, name, cluster, stream, servers)
                for replica in replicas:
                    if replica.popen.poll() is not None:
                        raise RuntimeError(f"replica {replica.label} died:\n{replica.tail()}")
                out["levels"].append(result)
                print_level(result)
            out["service"] = service_revision()
            for replica in replicas:
                replica.stop()
            replicas = []
    finally:
        for replica in replicas:
            replica.stop()
            log(f"replica {replica.label}: stopped; its log's tail:\n{replica.tail(15)}")
        if cluster is not None:
            cluster.stop()
            log("nats: cluster stopped")
        else:
            try:
                await nats_request(servers, "delete", stream, attempts=3)
                log(f"nats: deleted stream {stream}")
            except Exception as error:  # noqa: BLE001 - say what was left
                log(f"nats: stream {stream} NOT deleted: {error!r}")
        shutil.rmtree(tmp, ignore_errors=True)
    return out


async def seed(a: Replica, b: Replica, key: str) -> None:
    on_a, on_b = Http(a.url, key), Http(b.url, key)
    try:
        for scope, sensitivity in SCOPES.items():
            await put(on_a, f"/v1/scopes/{scope}", {"title": scope, "description": f"The subject's {scope}",
                                                    "sensitivity": sensitivity})
        for purpose, body in PURPOSES.items():
            await put(on_a, f"/v1/purposes/{purpose}", body)
        for partner, body in PARTNERS.items():
            await put(on_a, f"/v1/partners/{partner}", body)
        deadline = time.monotonic() + 30
        while True:  # B learns the catalog from the feed
            status, answer = await on_b.post("/v1/decisions", question("catalog-check"))
            if status == 200 and answer["denied"] and answer["denied"][0]["reason"] == "no_consent":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"B does not know the catalog after 30 s: {status} {answer}")
            await asyncio.sleep(0.1)
    finally:
        await on_a.close()
        await on_b.close()
    log(f"catalog: {len(SCOPES)} scopes, {len(PURPOSES)} purposes, {len(PARTNERS)} partners (B knows them)")


async def put(http: Http, path: str, body: dict[str, Any]) -> None:
    payload = json.dumps(body).encode()
    status, answer = await http._send("PUT", path, payload, b"")
    if status not in (200, 201):
        raise RuntimeError(f"PUT {path} -> {status} {answer[:500]!r}")


def print_level(r: dict[str, Any]) -> None:
    s, m, load, cpu = r["staleness"], r["min_position"], r["load"], r.get("cpu", {})
    achieved = "-" if r["achieved_rate"] is None else f"{r['achieved_rate']:,.0f}"
    log(f"  load: target {r['target_rate']:g}/s, achieved {achieved}/s over the {r['window_s']:.0f} s of probes; "
        f"sent {load['sent']:,} of {load['due']:,} due (dropped, backlog full: {load['dropped_backlog']:,}; "
        f"subject busy: {load['skipped_busy_subject']:,}); answers {load['statuses']}; in the window, latency from "
        f"due time p50 {fmt(load['latency_p50_ms'], 1)} ms, p99 {fmt(load['latency_p99_ms'], 1)} ms")
    log(f"  staleness (A's 200 on a withdrawal to B's first deny): p50 {fmt(s['p50_ms'], 2)} ms, p90 "
        f"{fmt(s['p90_ms'], 2)}, p99 {fmt(s['p99_ms'], 2)}, max {fmt(s['max_ms'], 1)} ms over {s['probes']} probes "
        f"({s['timeouts']} timeouts, {s['first_ask_denied']} denied at the first ask); grant seen on B p50 "
        f"{fmt(s['grant_seen_p50_ms'], 2)} ms")
    for name, phase in r.get("phases", {}).items():
        log(f"    {name}: {phase['probes']} probes, p50 {fmt(phase['p50_ms'], 1)} ms, p99 {fmt(phase['p99_ms'], 1)}, "
            f"max {fmt(phase['max_ms'], 1)} ms, {phase['timeouts']} timeouts")
    if "min_position_during_failure" in r:
        f = r["min_position_during_failure"]
        log(f"  min_position through the failure: {f['stale_after_withdraw']} stale after a withdrawal and "
            f"{f['stale_after_grant']} after a grant, over {f['probes']} probes (B's answer p50 {fmt(f['p50_ms'], 2)} "
            f"ms, p99 {fmt(f['p99_ms'], 2)} ms, max {fmt(f['max_ms'], 1)} ms)")
    log(f"  min_position: {m['stale_after_withdraw']} stale after a withdrawal and {m['stale_after_grant']} after a "
        f"grant, over {m['probes']} probes (B's answer p50 {fmt(m['p50_ms'], 2)} ms, p99 {fmt(m['p99_ms'], 2)} ms)")
    extra = cpu.get("extra_core_pct", {})
    log("  cpu % of a core: " + ", ".join([f"A {fmt(cpu.get('server_core_pct'))}"]
                                          + [f"{k} {fmt(v)}" for k, v in extra.items()]
                                          + [f"pg {fmt(cpu.get('postgres_core_pct'))}",
                                             f"probes {fmt(cpu.get('bench_core_pct'))}",
                                             f"other {fmt(cpu.get('other_core_pct'))}"]))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222", help="NATS with JetStream (default %(default)s)")
    parser.add_argument("--rates", default="0,300,1000", help="background writes/s, a level each (default %(default)s)")
    parser.add_argument("--probes", type=int, default=200, help="staleness probes a level (default %(default)s)")
    parser.add_argument("--min-position-probes", type=int, default=100,
                        help="probes with min_position a level, two answers each (default %(default)s)")
    parser.add_argument("--probe-concurrency", type=int, default=1, help="probes at a time (default %(default)s)")
    parser.add_argument("--probe-timeout", type=float, default=20.0,
                        help="seconds a probe waits for B (default %(default)s)")
    parser.add_argument("--level-seconds", type=float, default=60.0,
                        help="bound on a level's probes, then on its min_position probes (default %(default)s)")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of load before probes (default %(default)s)")
    parser.add_argument("--connections", type=int, default=16,
                        help="keep-alive connections of the load process to each replica (default %(default)s)")
    parser.add_argument("--relay", choices=("inline", "process"), help="CONSENT_RELAY of both replicas")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--nats-failure", action="store_true",
                        help="3-node cluster, CONSENT_NATS_REPLICAS=3, the stream leader killed during each level")
    parser.add_argument("--failure-after", type=float, default=4.0, help="seconds of probes before the kill")
    parser.add_argument("--failure-down", type=float, default=5.0, help="seconds the node stays down")
    parser.add_argument("--recovery", type=float, default=10.0,
                        help="seconds after the restart counted apart; with --nats-failure the probes run from the "
                             "start of the level to the end of these seconds, not --probes of them")
    parser.add_argument("--probe-gap", type=float, default=0.05,
                        help="--nats-failure: pause between two probes of one prober (default %(default)s s)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--load-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rates = [float(x) for x in args.rates.split(",") if x.strip()]
    if args.nats_failure and args.probe_concurrency == 1:
        args.probe_concurrency = 4  # probes also while others wait out the failure
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.load_worker:
        return run_load_worker(args.load_worker)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join(getattr(sys, "orig_argv", sys.argv)), "service": service_revision(),
            "machine": f"nproc {os.cpu_count()}, {cpu_model()}"}
    log(" | ".join(f"{k} {v}" for k, v in meta.items()))
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        out = runner.run(main_async(args))
    out["meta"] = meta
    log("")
    log(f"{'writes/s target':>16} {'achieved':>9} {'probes':>7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'timeouts':>8}  min_position stale (withdraw/grant of probes)")
    for r in out["levels"]:
        s, m = r["staleness"], r["min_position"]
        achieved = "-" if r["achieved_rate"] is None else f"{r['achieved_rate']:,.0f}"
        log(f"{r['target_rate']:>16,.0f} {achieved:>9} {s['probes']:>7} {fmt(s['p50_ms'], 2):>8} "
            f"{fmt(s['p99_ms'], 2):>8} {fmt(s['max_ms'], 1):>8} {s['timeouts']:>8}  "
            f"{m['stale_after_withdraw']}/{m['stale_after_grant']} of {m['probes']}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str) + "\n")
        log(f"figures written to {args.json}")
    stale = sum(m["stale_after_withdraw"] + m["stale_after_grant"] for r in out["levels"]
                for m in (r["min_position"], r.get("min_position_during_failure") or r["min_position"]))
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
