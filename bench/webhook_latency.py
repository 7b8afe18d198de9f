"""Withdrawal-to-receiver latency of partners' webhooks under a bounded write load (issue 13).

Starts `consent serve` on a fresh PostgreSQL database with NATS (the production configuration), registers a
webhook of partner `acme` pointing at a receiver in this process (asyncio, keep-alive, on loopback), then
sends consent writes to acme at `--rate` a second for `--duration` seconds (half grants, half withdrawals,
`--concurrency` in flight). For each withdrawal: from the moment its write was answered (the commit
acknowledged) to the moment the receiver had the webhook, matched by `webhook-id` = the event id of its receipt.
Prints p50/p99/max and how many arrived; the database is dropped at the end.

    .venv/bin/python bench/webhook_latency.py --rate 200 --duration 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid

import asyncpg
import httpx
import sqlalchemy as sa

ADMIN_KEY = "bench-admin-key-0123456789"
SHARED = {"CONSENT_MASTER_KEY": "YmVuY2ggbWFzdGVyIGtleTogMzIgYnl0ZXMgbG9uZyE=",
          "CONSENT_TOKEN_SIGNING_KEY": "bench-token-signing-key-0123456789abcdef",
          "CONSENT_PSEUDONYM_KEY": "bench-pseudonym-key-0123456789abcdef-0123"}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Receiver:
    """A minimal HTTP/1.1 server on its own event loop and thread: arrival time by webhook-id."""

    def __init__(self) -> None:
        self.port = free_port()
        self.arrived: dict[str, float] = {}
        self._ready = threading.Event()

    def start(self) -> None:
        threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True).start()
        self._ready.wait()

    async def _serve(self) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", self.port)
        self._ready.set()
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n")[1:] if ": " in line)
                headers = {k.lower(): v for k, v in headers.items()}
                await reader.readexactly(int(headers.get("content-length", 0)))
                self.arrived.setdefault(headers["webhook-id"], time.time())
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def create_database(postgres: str) -> str:
    name = f"consent_bench_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(postgres)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return sa.make_url(postgres).set(drivername="postgresql+asyncpg", database=name).render_as_string(False)


async def drop_database(postgres: str, url: str) -> None:
    conn = await asyncpg.connect(postgres)
    await conn.execute(f'DROP DATABASE IF EXISTS "{sa.make_url(url).database}" WITH (FORCE)')
    await conn.close()


async def setup(http: httpx.AsyncClient, receiver: Receiver, webhook: bool) -> None:
    await http.put("/v1/scopes/orders", json={"title": "Orders", "description": "", "sensitivity": "low"})
    await http.put("/v1/purposes/marketing", json={"title": "Marketing", "description": "Offers",
                                                   "legal_basis": "consent", "retention": "P30D"})
    await http.put("/v1/partners/acme", json={"name": "Acme", "status": "active",
                                              "data_uses": {"marketing": ["orders"]}})
    if not webhook:
        return
    answer = await http.post("/v1/partners/acme/webhooks", json={"url": f"http://127.0.0.1:{receiver.port}/hook"})
    answer.raise_for_status()


async def load(http: httpx.AsyncClient, rate: float, duration: float, concurrency: int) -> dict[str, float]:
    """Writes at `rate` a second; returns {event id of each withdrawal: when its write was answered}."""
    acknowledged: dict[str, float] = {}
    granted: list[str] = []
    slots = asyncio.Semaphore(concurrency)
    errors = 0

    async def write(subject: str, action: str) -> None:
        nonlocal errors
        async with slots:
            try:
                answer = await http.post(f"/v1/subjects/{subject}/consents", json={
                    "changes": [{"purpose": "marketing", "partner": "acme", "action": action}]})
            except httpx.HTTPError:
                errors += 1
                return
            done = time.time()
        if answer.status_code != 200:
            errors += 1
            return
        if action == "withdraw":
            for receipt in answer.json()["receipts"]:
                acknowledged[receipt["event_id"]] = done

    tasks = []
    start = time.monotonic()
    for n in range(int(rate * duration)):
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
        if granted and n % 2:
            subject, action = granted.pop(random.randrange(len(granted))), "withdraw"
        else:
            subject, action = f"bench-{n}", "grant"
            granted.append(subject)
        tasks.append(asyncio.create_task(write(subject, action)))
    await asyncio.gather(*tasks)
    achieved = len(tasks) / (time.monotonic() - start)  # answered a second, backlog included
    print(f"writes: {len(tasks)} at {achieved:.0f}/s (asked {rate:.0f}/s), errors {errors}")
    return acknowledged


async def breakdown(url: str) -> None:
    """Where the time goes, from the ledger: commit -> delivery recorded (the dispatcher), -> first attempt."""
    conn = await asyncpg.connect(sa.make_url(url).set(drivername="postgresql").render_as_string(False))
    try:
        rows = await conn.fetch("""
            SELECT extract(epoch FROM d.created_at - e.recorded_at) * 1000 AS dispatched,
                   extract(epoch FROM (d.attempts -> 0 ->> 'at')::timestamptz - d.created_at) * 1000 AS attempted
            FROM webhook_deliveries d JOIN events e ON e.event_id = d.event_id""")
    finally:
        await conn.close()
    for name in ("dispatched", "attempted"):
        values = sorted(float(row[name]) for row in rows)
        print(f"  {name}: p50 {statistics.median(values):.1f} ms, p99 {values[int(len(values) * 0.99)]:.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--rate", type=float, default=200.0, help="writes a second")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load")
    parser.add_argument("--concurrency", type=int, default=64, help="writes in flight at most")
    parser.add_argument("--no-webhook", action="store_true", help="the same writes with no webhook: a baseline")
    args = parser.parse_args()
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    receiver = Receiver()
    receiver.start()
    url = await create_database(args.postgres)
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, **SHARED, "CONSENT_DATABASE_URL": url, "CONSENT_NATS_URL": args.nats,
           "CONSENT_NATS_STREAM": f"BENCH_WH_{tag}", "CONSENT_NATS_SUBJECT_PREFIX": f"bench{tag}.consent.v1",
           "CONSENT_ADMIN_KEYS": ADMIN_KEY, "CONSENT_ALLOW_EPHEMERAL_KEYS": "1", "CONSENT_ACCESS_LOG": "0",
           "CONSENT_WEBHOOK_ALLOW_HTTP": "1", "CONSENT_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}"}
    server = subprocess.Popen([sys.executable, "-m", "consent.cli", "serve", "--host", "127.0.0.1", "--port",
                               str(port), "--migrate"], env=env, stderr=subprocess.DEVNULL)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=ADMIN, timeout=30,
                                     limits=httpx.Limits(max_connections=args.concurrency)) as http:
            for _ in range(150):
                try:
                    if (await http.get("/health/ready")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
            await setup(http, receiver, webhook=not args.no_webhook)
            acknowledged = await load(http, args.rate, args.duration, args.concurrency)
            if args.no_webhook:
                return
        deadline = time.time() + 30
        while time.time() < deadline and not acknowledged.keys() <= receiver.arrived.keys():
            await asyncio.sleep(0.1)
        latencies = sorted(max(0.0, receiver.arrived[e] - t) * 1000 for e, t in acknowledged.items()
                           if e in receiver.arrived)
        missing = len(acknowledged) - len(latencies)
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        print(f"withdrawals: {len(acknowledged)}, delivered {len(latencies)}, missing {missing}")
        print(f"withdrawal -> receiver: p50 {statistics.median(latencies):.1f} ms, p99 {p99:.1f} ms, "
              f"max {latencies[-1]:.1f} ms")
        await breakdown(url)
    finally:
        server.terminate()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            print("the server did not stop within 60 s of SIGTERM; killed")
            server.kill()
        await drop_database(args.postgres, url)


if __name__ == "__main__":
    main()
