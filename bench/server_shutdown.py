#!/usr/bin/env python3
"""What a server does on SIGTERM with requests in flight: uvicorn and Granian, as the bench starts them.

    .venv/bin/python bench/server_shutdown.py                  # both servers, one after the other
    .venv/bin/python bench/server_shutdown.py --server granian

For each server: a scratch database, one server with NATS (a stream of its own, deleted at the end) and
CONSENT_RELAY=process, the catalog written. Then writes are made to wait in PostgreSQL (this process holds
`LOCK TABLE events IN EXCLUSIVE MODE`), --in-flight consent writes are sent, the server gets SIGTERM, and
--hold seconds later the lock is released. It reports what each in-flight write got, whether a new
connection was refused after the signal, whether the lifespan shutdown ran (the service's presence says
"leaving" on NATS when it stops, consent/adapters/nats_presence.py), what became of the relay child (stopped
by the server, or gone by itself after its parent died: its log then says so) and how the server exited.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from consentbench.harness import SHARED_KEYS, server_command  # noqa: E402
from consentbench.machine import child_pids, free_port  # noqa: E402
from consentbench.workload import EVIDENCE, PARTNER, PARTNERS, PURPOSES, SCOPES  # noqa: E402
from scratch import scratch_database  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def check(kind: str, args: argparse.Namespace) -> dict:
    import asyncpg
    import nats

    tag = secrets.token_hex(4)
    stream, prefix = f"BENCH_{tag.upper()}", f"bench{tag}.consent.v1"
    key = secrets.token_urlsafe(24)
    tmp = Path(tempfile.mkdtemp(prefix="consent-shutdown-"))
    out: dict = {"server": kind}
    async with scratch_database(args.postgres, "consent_shutdown") as (dsn, _database):
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
        env.update(SHARED_KEYS, CONSENT_DATABASE_URL="postgresql+asyncpg" + dsn[len("postgresql"):],
                   CONSENT_ADMIN_KEYS=key, CONSENT_TOKEN_SIGNING_KEY=secrets.token_urlsafe(32),
                   CONSENT_PARTNER_RATE_LIMIT="0", CONSENT_NATS_URL=args.nats, CONSENT_NATS_STREAM=stream,
                   CONSENT_NATS_SUBJECT_PREFIX=prefix, CONSENT_RELAY="process", CONSENT_LOG_FORMAT="text")
        port = free_port()
        command = server_command(kind, port, 1)
        command[command.index("warning")] = "info"  # the servers' own lines about the shutdown
        log_path = tmp / "server.log"
        with open(log_path, "wb") as log_file:
            popen = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=ROOT)
        base = f"http://127.0.0.1:{port}"
        nc = await nats.connect(args.nats)
        leaving: list[float] = []
        try:
            async with httpx.AsyncClient(base_url=base, timeout=30,
                                         headers={"Authorization": f"Bearer {key}"}) as client:
                deadline = time.monotonic() + 60
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get("/health/ready")).status_code == 200:
                            break
                    if popen.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"{kind} did not start:\n{log_path.read_text()[-3000:]}")
                    await asyncio.sleep(0.2)
                relay_pid = (await client.get("/health/ready")).json().get("relay", {}).get("pid")
                workers = child_pids(popen.pid) if kind == "granian" else []
                out.update(pid=popen.pid, workers=workers, relay_pid=relay_pid)

                async def heard(message) -> None:
                    if message.data.startswith(b"leaving "):
                        leaving.append(time.monotonic())

                await nc.subscribe(f"_consent.{stream}.replicas", cb=heard)
                for scope, sensitivity in SCOPES.items():
                    await client.put(f"/v1/scopes/{scope}", json={"title": scope, "description": scope,
                                                                  "sensitivity": sensitivity})
                for purpose, body in PURPOSES.items():
                    await client.put(f"/v1/purposes/{purpose}", json=body)
                await client.put(f"/v1/partners/{PARTNER}", json=PARTNERS[PARTNER])

                body = {"changes": [{"purpose": "marketing", "partner": PARTNER, "scopes": ["profile.email"],
                                     "action": "grant"}], "source": "web", "evidence": EVIDENCE[0]}
                lock = await asyncpg.connect(dsn)
                transaction = lock.transaction()
                await transaction.start()
                await lock.execute("LOCK TABLE events IN EXCLUSIVE MODE")  # writes wait; reads do not

                async def one(i: int) -> str:
                    try:
                        answer = await client.post(f"/v1/subjects/shutdown-{i}/consents", json=body)
                        return str(answer.status_code)
                    except httpx.HTTPError as error:
                        return type(error).__name__

                writes = [asyncio.create_task(one(i)) for i in range(args.in_flight)]
                await asyncio.sleep(1.0)
                out["done_before_signal"] = sum(task.done() for task in writes)
                popen.send_signal(signal.SIGTERM)
                signalled = time.monotonic()
                await asyncio.sleep(0.5)
                try:
                    async with httpx.AsyncClient(timeout=2) as fresh:
                        answer = await fresh.get(f"{base}/health/live")
                        out["new_connection_after_signal"] = f"answered {answer.status_code}"
                except httpx.HTTPError as error:
                    out["new_connection_after_signal"] = f"refused ({type(error).__name__})"
                out["exited_while_writes_waited"] = popen.poll() is not None
                await asyncio.sleep(max(0.0, args.hold - 0.5))
                out["exited_while_writes_waited"] |= popen.poll() is not None
                await transaction.commit()
                released = time.monotonic()
                await lock.close()
                results = await asyncio.gather(*writes)
                out["in_flight_results"] = {r: results.count(r) for r in sorted(set(results))}
                out["writes_answered_after_release_s"] = round(time.monotonic() - released, 2)
                try:
                    code = await asyncio.to_thread(popen.wait, 30)
                except subprocess.TimeoutExpired:
                    code = "still running after 30 s"
                out["exit"] = code
                out["exit_after_signal_s"] = round(time.monotonic() - signalled, 2)
                out["lifespan_shutdown_ran"] = bool(leaving)
                if leaving:
                    out["leaving_after_signal_s"] = round(leaving[0] - signalled, 2)
                await asyncio.sleep(1.5)  # an orphaned relay child notices within REPORT_EVERY (0.5 s)
                out["relay_child_alive"] = alive(relay_pid)
                out["workers_alive"] = [w for w in workers if alive(w)]
                text = log_path.read_text(errors="replace")
                out["relay_saw_parent_gone"] = "the server that started this relay is gone" in text
                out["log_tail"] = [line for line in text.splitlines() if "consent.access" not in line][-12:]
                conn = await asyncpg.connect(dsn)
                try:
                    out["events_in_log"] = await conn.fetchval(
                        "SELECT count(*) FROM events WHERE stream_id LIKE '%shutdown-%'")
                finally:
                    await conn.close()
        finally:
            if popen.poll() is None:
                popen.kill()
                popen.wait()
            for pid in [out.get("relay_pid"), *out.get("workers", [])]:
                if alive(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(Exception):
                await nc.jetstream(timeout=10).delete_stream(stream)
            await nc.close()
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("uvicorn", "granian", "both"), default="both")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--in-flight", type=int, default=10, help="writes waiting when the signal comes")
    parser.add_argument("--hold", type=float, default=3.0, help="seconds the writes wait after the signal")
    args = parser.parse_args()
    kinds = ("uvicorn", "granian") if args.server == "both" else (args.server,)
    for kind in kinds:
        result = asyncio.run(check(kind, args))
        print(f"== {kind}")
        for name, value in result.items():
            if name == "log_tail":
                print("   server log, last lines:\n" + "\n".join(f"     {line}" for line in value))
            else:
                print(f"   {name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
