"""The `scale` run: decisions over 10,000 to 1,000,000 bulk-seeded subjects, for each cache size and
subject distribution, and the ratios between the largest and the smallest size."""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from typing import Any

import httpx

from consentbench.checks import ratio
from consentbench.figures import fmt, log
from consentbench.harness import Bench
from consentbench.lua import lua_decisions, zipf_subject
from consentbench.scale_prepare import audit_verify, bulk_seed, checkpoint_backlog, rebuild
from consentbench.seed import partner_token, seed_catalog
from consentbench.workload import QUESTIONS, subject_id, subject_width
from consentbench.wrk_runs import run_wrk


async def scale_run(bench: Bench) -> None:
    args = bench.args
    sizes = args.scale_subjects
    log(f"run scale: {', '.join(f'{n:,}' for n in sizes)} subjects, 10 consents each, bulk-seeded with COPY; "
        f"consent projections rebuild; decisions at {args.connections} and {args.latency_connections} "
        f"connections over random subjects")
    results = bench.results.setdefault("runs", {}).setdefault("scale", {"sizes": {}})
    for n in sizes:
        started = time.monotonic()
        try:
            results["sizes"][str(n)] = await scale_one(bench, n)
        finally:
            await bench.end_run()
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


async def scale_one(bench: Bench, n: int) -> dict[str, Any]:
    args = bench.args
    width = subject_width(n)
    out: dict[str, Any] = {"subjects": n}
    await bench.create_database()
    bench.migrate()
    # The catalog through the API (its events in the log), then the server goes away for the bulk load.
    await bench.start_server(f"scale-{n}-catalog")
    async with httpx.AsyncClient(base_url=bench.base_url, timeout=30) as client:
        await seed_catalog(bench, client)
    await bench.stop_server()
    out["seed"] = await bulk_seed(bench, n, width)
    out["rebuild"] = rebuild(bench)
    if not args.scale_skip_checkpoints:
        out["checkpoints"] = checkpoint_backlog(bench)
    if args.scale_verify:
        out["verify"] = audit_verify(bench)
    # The rebuild leaves the new read tables without planner statistics; with autovacuum off (as
    # on the machine this bench was written on) they would stay so, and a batch of 1,000 subjects
    # is then read with a parallel sequential scan. Analyse them, as autovacuum would in time.
    autovacuum = (await bench.sql("SHOW autovacuum"))[0][0]
    began = time.monotonic()
    if not args.scale_skip_analyze:
        await bench.sql("ANALYZE subjects, consents")
    out["analyze"] = {"seconds": None if args.scale_skip_analyze else round(time.monotonic() - began, 1),
                      "autovacuum": autovacuum}
    log("  analyze: subjects and consents " + ("NOT analysed (--scale-skip-analyze)"
                                                if args.scale_skip_analyze else
                                                f"analysed in {out['analyze']['seconds']} s")
        + f" (the rebuild does not; autovacuum is {autovacuum} on this server)")
    counts = (await bench.sql(
        "SELECT (SELECT count(*) FROM subjects) AS subjects, (SELECT count(*) FROM consents) AS consents, "
        "(SELECT count(*) FROM events) AS events, pg_database_size(current_database()) AS bytes"))[0]
    statuses = await bench.sql("SELECT status, count(*) AS n FROM consents GROUP BY status ORDER BY status")
    out["read_models"] = {"subjects": counts["subjects"], "consents": counts["consents"],
                          "events": counts["events"], "database_mb": round(counts["bytes"] / 2**20),
                          "consents_by_status": {row["status"]: row["n"] for row in statuses}}
    by_status = ", ".join(f"{row['status']} {row['n']:,}" for row in statuses)
    log(f"  read models: {counts['subjects']:,} subjects, {counts['consents']:,} consents ({by_status}); "
        f"database {counts['bytes'] / 2**20:,.0f} MB")
    if counts["subjects"] != n or counts["consents"] != 10 * n:
        bench.problems.append(f"run scale {n}: read models hold {counts['subjects']} subjects and "
                             f"{counts['consents']} consents, expected {n} and {10 * n}")
    out["variants"] = {}
    for cache_size in args.scale_cache_size:
        for distribution in args.scale_distribution:
            label = f"cache {cache_size}, {distribution}"
            out["variants"][label] = await scale_variant(bench, n, width, cache_size, distribution)
            await bench.stop_server()
    first = next(iter(out["variants"].values()))  # the figures the summary and ratios use
    out.update({k: first[k] for k in ("cache_size", "decisions", "latency", "rss_mb", "rss_mb_started",
                                      "rss_mb_warm", "cache_warm_seconds", "answer_mix")})
    return out


async def scale_variant(bench: Bench, n: int, width: int, cache_size: int, distribution: str) -> dict[str, Any]:
    """A server with this cache size, its cache filled (with the most asked subjects under Zipf), then
    decisions over subjects drawn uniformly or by Zipf's law."""
    args = bench.args
    scale_args = argparse.Namespace(**{**vars(args), "subjects": n})
    out: dict[str, Any] = {"cache_size": cache_size, "distribution": distribution}
    server = await bench.start_server(f"scale-{n}-{cache_size}-{distribution}",
                                     {"CONSENT_SUBJECT_CACHE_SIZE": str(cache_size)})
    out["service"] = bench.server_revision
    out["rss_mb_started"] = server.rss_mb()
    order = (lambda i: i) if distribution == "uniform" else (lambda rank: zipf_subject(rank, n))
    async with httpx.AsyncClient(base_url=bench.base_url, timeout=60) as client:
        token = await partner_token(bench, client)
        auth = {"Authorization": f"Bearer {token}"}
        # Fill the cache as a replica in service would be (every subject, or as many as it holds).
        warm = min(n, cache_size)
        began = time.monotonic()
        for first in range(0, warm, 1000):
            items = [{"subject_id": subject_id(args.subject_prefix, width, order(i)), "purpose": "marketing",
                      "scopes": ["profile.email"]} for i in range(first, min(first + 1000, warm))]
            await bench.expect(await client.post("/v1/decisions/batch", headers=auth, json={"items": items}), 200)
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
            answer = await bench.expect(await client.post("/v1/decisions", headers=auth, json={
                "subject_id": subject_id(args.subject_prefix, width, rng.randrange(n)), "purpose": purpose,
                "scopes": scopes}), 200)
            answers[answer["decision"]] += 1
        out["answer_mix"] = dict(answers)
        log("  answers: " + ", ".join(f"{k} {100 * v / args.sample:.0f}%" for k, v in answers.most_common())
            + f" (sample of {args.sample} single decisions)")
    tag = f"scale-{n}-{cache_size}-{distribution}"
    script = lua_decisions(scale_args, token, distribution)
    log(f"  decisions: {n:,} subjects, {distribution}, {args.connections} connections, {args.duration} s")
    out["decisions"] = await run_wrk(bench, f"{tag}-decisions", script, "/v1/decisions", args.connections)
    log(f"  latency: {n:,} subjects, {distribution}, {args.latency_connections} connections, {args.duration} s")
    out["latency"] = await run_wrk(bench, f"{tag}-latency", script, "/v1/decisions", args.latency_connections)
    out["rss_mb"] = server.rss_mb()
    log(f"  {n:,} (cache {cache_size:,}, {distribution}): {fmt(out['decisions']['rps'])} decisions/s at "
        f"{args.connections}, p99 {fmt(out['decisions']['p99_ms'], 2)} ms there, p99 "
        f"{fmt(out['latency']['p99_ms'], 2)} ms at {args.latency_connections}; server RSS {out['rss_mb']} MB")
    return out
