"""The runs of RUNS (ceiling, decisions, latency, batch, writes, baseline): one server (or --url),
seeded over HTTP."""

from __future__ import annotations

import secrets
import urllib.parse

import httpx

from consentbench.baseline import baseline
from consentbench.figures import log
from consentbench.harness import Bench
from consentbench.lua import lua_batch, lua_ceiling, lua_decisions, lua_writes
from consentbench.machine import listening_pid
from consentbench.privacy import privacy_run
from consentbench.seed import partner_token, position, revoke_credential, seed_catalog, seed_subjects, warm_and_sample
from consentbench.wrk_runs import run_wrk, wait_quiet


async def main_part(bench: Bench, wanted: set[str]) -> None:
    """The runs of RUNS: one server (or --url), seeded over HTTP."""
    args = bench.args
    own = bench.base_url is None
    try:
        if own or "baseline" in wanted:
            await bench.create_database()
        if own:
            bench.migrate()
            nats = None
            if args.server_nats:
                # A stream and subject prefix of this run's own, deleted at the end (Bench.end_run).
                nats = bench.nats_env(secrets.token_hex(4))
                bench.nats_streams.append(nats["CONSENT_NATS_STREAM"])
                bench.results["server_nats"] = nats
            await bench.start_server(extra_env=nats)
        assert bench.base_url is not None
        if not own:
            target = urllib.parse.urlsplit(bench.base_url)
            if target.hostname in ("127.0.0.1", "localhost", "::1"):
                bench.server_pid = listening_pid(target.port or 80)
            log(f"server: {bench.base_url}, " + (f"pid {bench.server_pid} (its CPU is measured)" if bench.server_pid
                                               else "not found on this machine (its CPU is not measured)"))
        # Idle connections are dropped after 1 s, well before uvicorn's 5 s keep-alive timeout closes
        # them from its side: reusing one that the server is closing fails with a ReadError.
        limits = httpx.Limits(max_connections=args.seed_concurrency, keepalive_expiry=1.0)
        async with httpx.AsyncClient(base_url=bench.base_url, timeout=30, limits=limits) as client:
            await seed_catalog(bench, client)
            try:
                await main_runs(bench, client, wanted)
            finally:
                await revoke_credential(bench, client)
    finally:
        await bench.stop_wrk()
        if bench.server_pid is not None:
            bench.results["server_rss_mb"] = bench.server_rss_mb()
        if bench.server is not None:
            bench.results["server_log_tail"] = bench.server_log_tail(20)
        await bench.stop_server()
        await bench.drop_database()
        if not own:
            bench.server_pid = None


async def main_runs(bench: Bench, client: httpx.AsyncClient, wanted: set[str]) -> None:
    args = bench.args
    if not args.skip_seed:
        await seed_subjects(bench, client)
    token = await partner_token(bench, client)
    await warm_and_sample(bench, client, token)
    runs = bench.results.setdefault("runs", {})
    if "ceiling" in wanted:
        log(f"run ceiling: GET /health/live, {args.connections} connections, {args.duration} s")
        runs["ceiling"] = await run_wrk(bench, "ceiling", lua_ceiling(args, ""), "/health/live", args.connections)
    if "decisions" in wanted:
        log(f"run decisions: POST /v1/decisions, {args.connections} connections, {args.duration} s")
        token = await partner_token(bench, client)
        runs["decisions"] = await run_wrk(bench, "decisions", lua_decisions(args, token), "/v1/decisions",
                                               args.connections)
    if "latency" in wanted:
        log(f"run latency: POST /v1/decisions, {args.latency_connections} connections, {args.duration} s")
        token = await partner_token(bench, client)
        runs["latency"] = await run_wrk(bench, "latency", lua_decisions(args, token), "/v1/decisions",
                                             args.latency_connections)
    if "batch" in wanted:
        log(f"run batch: POST /v1/decisions/batch x{args.batch_size}, {args.batch_connections} connections, "
            f"{args.duration} s")
        token = await partner_token(bench, client)
        result = await run_wrk(bench, "batch", lua_batch(args, token), "/v1/decisions/batch",
                                    args.batch_connections)
        result["decisions_per_s"] = result["rps"] * args.batch_size
        runs["batch"] = result
    if "writes" in wanted:
        log(f"run writes: POST /v1/subjects/{{id}}/consents, one change each, {args.write_connections} "
            f"connections, {args.duration} s")
        token = await partner_token(bench, client)
        before = await position(bench, client, token)
        result = await run_wrk(bench, "writes", lua_writes(args, bench.admin_key), "/v1/subjects",
                                    args.write_connections)
        after = await position(bench, client, token)
        # Every request should append one event: count them over warm-up and measured run.
        result["events_appended"] = after - before
        result["in_flight_at_stop"] = args.write_connections * (2 if args.warmup > 0 else 1)
        runs["writes"] = result
    if "privacy" in wanted:
        log(f"run privacy: the privacy center page, then decisions at {args.latency_connections} connections "
            f"alone and beside pages")
        await privacy_run(bench, client)
    if "baseline" in wanted:
        log(f"run baseline: raw asyncpg, {args.baseline_connections} connections, insert + upsert a "
            f"transaction, {args.duration} s")
        await wait_quiet(bench, "baseline")
        runs["baseline"] = await baseline(bench)
