"""The `propagation` run: commit on server A to a changed decision on server B, then reads with
min_position that must never be stale."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from typing import Any

import httpx

from consentbench.cpu_meter import CpuMeter
from consentbench.figures import fmt, log, percentile
from consentbench.harness import Bench
from consentbench.lua import lua_pacing, lua_writes
from consentbench.seed import seed_catalog
from consentbench.server import Server
from consentbench.workload import EVIDENCE, PARTNER
from consentbench.wrk_runs import wait_quiet, wrk


async def propagation_run(bench: Bench) -> None:
    """Two replicas A and B: a write on A, then B's decision until it changes; then min_position."""
    args = bench.args
    tag = secrets.token_hex(4)
    env = bench.nats_env(tag)
    signing_key = secrets.token_urlsafe(32)
    samples = args.propagation_samples
    log(f"run propagation: servers A and B on one database and NATS stream {env['CONSENT_NATS_STREAM']}; "
        f"wrk writes on A at {args.propagation_connections} connections; {samples} probes, then {samples} "
        f"with min_position")
    try:
        await bench.create_database()
        bench.migrate()
        bench.nats_streams.append(env["CONSENT_NATS_STREAM"])
        a = await bench.start_server("A", env, signing_key)
        b = await bench.spawn_server("B", env, signing_key)
        log(f"server B: pid {b.pid} on {b.base_url} (same database, stream and signing key)")
        probe = f"bench-probe-{tag}"
        question = {"subject_id": probe, "purpose": "marketing", "scopes": ["profile.email"], "partner": PARTNER}
        grant = {"changes": [{"purpose": "marketing", "partner": PARTNER, "scopes": ["profile.email"],
                              "action": "grant"}], "source": "web", "evidence": EVIDENCE[0]}
        withdraw = {"changes": [{"purpose": "marketing", "partner": PARTNER, "action": "withdraw"}],
                    "source": "app", "evidence": EVIDENCE[1]}
        admin = bench.admin()
        async with httpx.AsyncClient(base_url=a.base_url, timeout=30) as on_a, \
                httpx.AsyncClient(base_url=b.base_url, timeout=30) as on_b:
            await seed_catalog(bench, on_a)
            # B learns the catalog from the feed: wait until it knows the partner and the purpose.
            deadline = time.monotonic() + 30
            while True:
                answer = await bench.expect(await on_b.post("/v1/decisions", headers=admin, json=question), 200)
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
                await wait_quiet(bench, "propagation")
                result = await propagation_probe(bench, a, b, on_a, on_b, probe, question, grant, withdraw)
                other = result["cpu"].get("other_core_pct") or 0
                if bench.args.wait_quiet <= 0 or other <= 25 or attempt == 2:
                    break
                log(f"  (run propagation disturbed: other processes used {other:.0f}% of a core; repeating it)")
        result.update({"probe_subject": probe, "relay_leader": leader, "server_env": env,
                       "service": bench.server_revision})
        stale, timeouts = result["stale_with_min_position"], result["timeouts"]
        bench.results.setdefault("runs", {})["propagation"] = result
        log(f"  propagation: p50 {fmt(result['propagation_p50_ms'], 2)} ms, p99 "
            f"{fmt(result['propagation_p99_ms'], 2)} ms, max {fmt(result['propagation_max_ms'], 1)} ms over "
            f"{samples} probes ({timeouts} timeouts); with min_position: {stale} stale of {samples}")
        if stale:
            bench.problems.append(f"run propagation: {stale} stale answers with min_position, e.g. "
                                 f"{json.dumps(result['stale_examples'][0])}")
        if timeouts:
            bench.problems.append(f"run propagation: {timeouts} probes saw no change on B within 5 s")
    finally:
        await bench.end_run()


async def propagation_probe(bench: Bench, a: Server, b: Server, on_a: httpx.AsyncClient, on_b: httpx.AsyncClient,
                            probe: str, question: dict[str, Any], grant: dict[str, Any],
                            withdraw: dict[str, Any]) -> dict[str, Any]:
    """Background writes on A; probes toggling the probe subject's grant (it starts and ends withdrawn)."""
    args = bench.args
    samples = args.propagation_samples
    admin = bench.admin()
    load_args = argparse.Namespace(**{**vars(args), "write_connections": args.propagation_connections})
    script = lua_writes(load_args, bench.admin_key) + lua_pacing(args.write_rate, args.propagation_connections)
    extra = {"B": b.pid, **bench.nats_server_pid()}
    for name, client in (("A relay", on_a), ("B relay", on_b)):
        child = (await bench.relay_child(client)).get("relay")
        if child:
            extra[name] = child
    meter = CpuMeter(a.pid, bench.database, extra)
    load = asyncio.create_task(wrk(bench, "propagation-load", script, "/v1/subjects",
                                        args.propagation_connections, 3600))
    granted = False
    try:
        await asyncio.sleep(max(1.0, args.warmup))
        if load.done():
            await load  # it failed: raise its error
        if bench.wrk_proc is not None:  # still running, so not in this process's children's usage
            meter.extra_pids["wrk"] = bench.wrk_proc.pid
        meter.start()
        flips, polls, writes, timeouts, first_poll = [], [], [], 0, 0
        for _ in range(samples):
            body, expected = (withdraw, "deny") if granted else (grant, "permit")
            started = time.perf_counter()
            await bench.expect(await on_a.post(f"/v1/subjects/{probe}/consents", headers=admin, json=body), 200)
            written = time.perf_counter()
            writes.append(1000 * (written - started))
            granted = not granted
            n = 0
            while True:
                answer = await bench.expect(await on_b.post("/v1/decisions", headers=admin, json=question), 200)
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
            written = await bench.expect(await on_a.post(f"/v1/subjects/{probe}/consents", headers=admin,
                                                        json=body), 200)
            granted = not granted
            started = time.perf_counter()
            answer = await bench.expect(await on_b.post("/v1/decisions", headers=admin, json={
                **question, "min_position": written["position"]}), 200)
            consistent.append(1000 * (time.perf_counter() - started))
            if answer["decision"] != expected:
                stale.append({"position": written["position"], "expected": expected, "answer": answer})
            behind += answer["position"] < written["position"]
        cpu = meter.stop()
    finally:
        bench.interrupt_wrk()
    result = await load
    bench.flag_errors("propagation (background writes on A)", result)
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
