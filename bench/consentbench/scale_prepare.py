"""The scale run's database: the bulk load (bench/seed_scale.py), `consent projections rebuild`, the
log's checkpoints and `consent audit verify`, each timed."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
from seed_scale import Seeder, chunks, copy_rows  # bench/seed_scale.py, beside bench/bench.py

from consentbench.figures import log
from consentbench.harness import Bench
from consentbench.workload import EVIDENCE


async def bulk_seed(bench: Bench, n: int, width: int) -> dict[str, Any]:
    """N subjects x 10 consents as hash-chained events (bench/seed_scale.py), sent with COPY in
    chunks, each chunk computed while the previous one is copied. The events table's indexes are
    dropped for the load and built again."""
    args = bench.args
    actor = f"admin:{hashlib.sha256(bench.admin_key.encode()).hexdigest()[:12]}"
    conn = await asyncpg.connect(bench.database_dsn)
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


def audit_verify(bench: Bench) -> dict[str, Any]:
    """`consent audit verify` over the seeded log: it must pass, and how fast it walks."""
    command = cli_command("audit", "verify")
    began = time.monotonic()
    done = subprocess.run(command, env=cli_env(bench), capture_output=True, text=True)
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


def checkpoint_backlog(bench: Bench) -> dict[str, Any]:
    """Checkpoint the bulk-seeded log, as a service writing it would have done every 10 s along the
    way. Else the first server started catches up on millions of events while it is measured (its
    checkpointer took most of a core through the 1,000,000-subject decision runs)."""
    code = ("import asyncio, os, time\n"
            "from consent.adapters.database import Database\n"
            "from consent.adapters.log_checkpoints import write_checkpoint\n"
            "from consent.adapters.sql_reads import head_position\n"
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
    done = subprocess.run([sys.executable, "-c", code], env=cli_env(bench), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"checkpointing the seeded log failed ({done.returncode}):\n{done.stderr[-3000:]}")
    events, seconds = done.stdout.split()
    log(f"  checkpoints: {int(events):,} events checkpointed in {seconds} s before the servers start")
    return {"events": int(events), "seconds": float(seconds)}


def rebuild(bench: Bench) -> dict[str, Any]:
    env = cli_env(bench)
    command = cli_command("projections", "rebuild")
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


def cli_env(bench: Bench) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env["CONSENT_DATABASE_URL"] = bench.database_url
    return env


def cli_command(*words: str) -> list[str]:
    cli = Path(sys.executable).parent / "consent"
    return [str(cli), *words] if cli.exists() else [sys.executable, "-m", "consent.cli", *words]
