"""The `lag` run: publish lag from a write's commit to a NATS subscriber's receipt, under write load."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import secrets
import time

import httpx

from consentbench.figures import fmt, log, percentile
from consentbench.harness import Bench
from consentbench.lua import lua_pacing, lua_writes
from consentbench.seed import seed_catalog
from consentbench.workload import WRITE_KEY
from consentbench.wrk_runs import run_wrk


async def lag_run(bench: Bench) -> None:
    """Publish lag under the write load of `writes`: CloudEvent `time` (occurred_at, taken before the
    write's transaction) to receipt by a plain NATS subscriber in this process."""
    import nats
    args = bench.args
    tag = secrets.token_hex(4)
    env = bench.nats_env(tag)
    prefix = env["CONSENT_NATS_SUBJECT_PREFIX"]
    pace = f" paced near {args.write_rate:g}/s" if args.write_rate else ""
    log(f"run lag: POST .../consents at {args.write_connections} connections{pace}, {args.duration} s, on a server "
        f"publishing to NATS {args.nats} (stream {env['CONSENT_NATS_STREAM']}); subscriber on {prefix}.subject.>")
    received: list[tuple[float, bytes]] = []

    async def on_message(msg) -> None:
        received.append((time.time(), msg.data))

    try:
        await bench.create_database()
        bench.migrate()
        bench.nats_streams.append(env["CONSENT_NATS_STREAM"])
        nc = await nats.connect(args.nats, name="consent-bench-lag")
        try:
            await nc.subscribe(f"{prefix}.subject.>", cb=on_message, pending_msgs_limit=0,
                                pending_bytes_limit=0)
            await nc.flush()
            await bench.start_server("lag", env)
            async with httpx.AsyncClient(base_url=bench.base_url, timeout=30) as client:
                await seed_catalog(bench, client)
                extra = {**bench.nats_server_pid(), **await bench.relay_child(client)}
                # A probe among the load, one write at a time: its answer comes after its commit, so
                # answer to receipt is a lower bound of commit to receipt (the CloudEvent time gives
                # the upper bound).
                stop_probe = asyncio.Event()
                probe_task = asyncio.create_task(lag_probe(bench, client, f"bench-lagprobe-{tag}", stop_probe))
                try:
                    script = lua_writes(args, bench.admin_key) + lua_pacing(args.write_rate,
                                                                           args.write_connections)
                    result = await run_wrk(bench, "lag", script, "/v1/subjects", args.write_connections,
                                                extra_pids=extra)
                finally:
                    stop_probe.set()
                    probes = await probe_task
                window = bench.measured_window
                # Wait until every subject event committed so far has reached the subscriber.
                count = (await bench.sql(
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
        rows = await bench.sql("SELECT position, extract(epoch FROM recorded_at)::float8 AS at FROM events "
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
            "relay": ready.get("relay"), "server_env": env, "service": bench.server_revision,
            "write_rate_target": args.write_rate})
        bench.results.setdefault("runs", {})["lag"] = result
        log(f"  lag: {len(lags):,} messages of the measured run; CloudEvent time to receipt p50 "
            f"{fmt(result['lag_p50_ms'], 2)} ms, p99 {fmt(result['lag_p99_ms'], 2)} ms, max "
            f"{fmt(result['lag_max_ms'], 1)} ms; {result['received']:,} of {count:,} subject events received")
        if result["missing"]:
            bench.problems.append(f"run lag: {result['missing']} subject events never reached the subscriber")
    finally:
        await bench.end_run()


async def lag_probe(bench: Bench, client: httpx.AsyncClient, subject: str, stop: asyncio.Event) -> list[tuple]:
    """Toggle a grant on one subject, one request at a time, until told to stop: (position, sent, answered)
    in wall-clock seconds for each write."""
    change = {"purpose": WRITE_KEY["purpose"], "partner": WRITE_KEY["partner"]}
    bodies = [{"changes": [{**change, "scopes": WRITE_KEY["scopes"], "action": "grant"}], "source": "web"},
              {"changes": [{**change, "action": "withdraw"}], "source": "web"}]
    probes: list[tuple] = []
    while not stop.is_set():
        sent = time.time()
        answer = await bench.expect(await client.post(f"/v1/subjects/{subject}/consents", headers=bench.admin(),
                                                     json=bodies[len(probes) % 2]), 200)
        probes.append((answer["position"], sent, time.time()))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.02)
    return probes
