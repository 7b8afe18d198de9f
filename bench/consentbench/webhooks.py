"""The `webhooks` run: partners' webhooks under a write load from wrk, every write a delivery.

One server on PostgreSQL + NATS (the production configuration; --webhook-sender sets where its senders run),
a receiver in this process (asyncio on a thread of its own, keep-alive, loopback) that notes when each
`webhook-id` arrives. Four parts:
1. writes at full speed with no webhook (wrk, --write-connections), then again with one webhook of the
   writes' partner hearing every write: the writes' cost of deliveries;
2. writes paced near --webhook-rate a second (--webhook-connections; each waits connections/rate
   between its requests, so the rate reached is below the one asked by the answers' latency) while this
   process withdraws a probe subject's grant every 0.1 s: from each withdrawal's answer to its webhook at
   the receiver (what a partner sees);
3. from the ledger, commit (`recorded_at`) to arrival for every delivery of parts 1 and 2, and whether every
   one arrived;
4. decisions at full speed (--connections) alone, beside writes paced near BESIDE_RATE with the webhook
   disabled, then beside the same writes each heard by the webhook: what deliveries cost decisions.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import threading
import time
from typing import Any

import httpx

from consentbench.cpu_meter import CpuMeter
from consentbench.figures import fmt, log, percentile
from consentbench.harness import Bench
from consentbench.lua import lua_decisions, lua_pacing, lua_writes
from consentbench.machine import free_port
from consentbench.seed import partner_token, seed_catalog
from consentbench.workload import EVIDENCE, WRITE_KEY
from consentbench.wrk_runs import wait_quiet, wrk

BESIDE_RATE = 500  # writes a second asked beside the decisions run
PROBE_EVERY = 0.1  # seconds between probe withdrawals
ARRIVAL_WAIT = 60.0  # seconds to wait after the load for the last deliveries


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


async def webhooks_run(bench: Bench) -> None:
    args = bench.args
    tag = secrets.token_hex(4)
    receiver = Receiver()
    receiver.start()
    env = {**bench.nats_env(tag), "CONSENT_WEBHOOK_ALLOW_HTTP": "1",
           "CONSENT_WEBHOOK_ALLOWED_HOSTS": f"127.0.0.1:{receiver.port}"}
    if args.webhook_sender:
        env["CONSENT_WEBHOOK_SENDER"] = args.webhook_sender
    partner = WRITE_KEY["partner"]
    log(f"run webhooks: one server on NATS stream {env['CONSENT_NATS_STREAM']}, a receiver on port "
        f"{receiver.port}; writes to {partner} at {args.write_connections} connections, then paced near "
        f"{args.webhook_rate:.0f}/s with probes")
    result: dict[str, Any] = {"server_env": env, "write_connections": args.write_connections}
    try:
        await bench.create_database()
        bench.migrate()
        bench.nats_streams.append(env["CONSENT_NATS_STREAM"])
        server = await bench.start_server("webhooks", env)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            await seed_catalog(bench, http)
            extra = {**bench.nats_server_pid(), **await bench.relay_child(http)}

            await wait_quiet(bench, "webhooks (no webhook)")
            result["writes_without_webhook"] = await _full_speed(bench, extra, "plain")
            hook = await bench.expect(await http.post(f"/v1/partners/{partner}/webhooks", headers=bench.admin(),
                                                      json={"url": f"http://127.0.0.1:{receiver.port}/hook"}), 201)
            sender = (await http.get("/health/ready")).json().get("webhook_sender", {}).get("pid")
            if sender:
                extra["webhook sender"] = sender
            await wait_quiet(bench, "webhooks (one webhook)")
            since = await _head(bench)
            result["writes_with_webhook"] = await _full_speed(bench, extra, "heard")
            result["drained_after_s"] = await _drained(bench, hook["id"], ARRIVAL_WAIT)
            result["writes_with_webhook"].update(await _arrivals(bench, receiver, hook["id"], since))
            await wait_quiet(bench, "webhooks (paced)")
            result["paced"] = await _paced(bench, http, receiver, hook["id"], extra)
            result["decisions"] = await _decisions(bench, http, hook["id"], extra)
        server.check_alive()
        result["service"] = bench.server_revision
        bench.results.setdefault("runs", {})["webhooks"] = result
        _log(result)
    finally:
        await bench.end_run()


async def _full_speed(bench: Bench, extra: dict[str, int], prefix: str) -> dict[str, Any]:
    """Writes as fast as the server answers, each on subjects of their own (`prefix`)."""
    args = bench.args
    load_args = argparse.Namespace(**{**vars(args), "subject_prefix": f"{args.subject_prefix}{prefix}-"})
    meter = CpuMeter(bench.server_pid, bench.database, dict(extra))
    meter.start()
    figures = await wrk(bench, "webhooks-writes", lua_writes(load_args, bench.admin_key), "/v1/subjects",
                        args.write_connections, int(args.duration))
    figures["cpu"] = meter.stop()
    figures["server_us_per_write"] = 10_000 * figures["cpu"]["server_core_pct"] / figures["rps"]
    bench.flag_errors("webhooks (writes)", figures)
    log(f"  writes: {figures['rps']:,.0f}/s, p99 {fmt(figures['p99_ms'], 2)} ms")
    return figures


async def _drained(bench: Bench, webhook_id: str, limit: float) -> float | None:
    """Seconds until no delivery of the webhook is pending: the backlog a full-speed run left."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        rows = await bench.sql("SELECT count(*) AS n FROM webhook_deliveries WHERE webhook_id = $1 "
                               "AND status <> 'delivered'", webhook_id)
        if rows[0]["n"] == 0:
            return round(time.monotonic() - started, 1)
        await asyncio.sleep(0.2)
    return None


async def _paced(bench: Bench, http: httpx.AsyncClient, receiver: Receiver, webhook_id: str,
                 extra: dict[str, int]) -> dict[str, Any]:
    args = bench.args
    since = await _head(bench)
    load_args = argparse.Namespace(**{**vars(args), "subject_prefix": f"{args.subject_prefix}paced-"})
    connections = args.webhook_connections
    load_args.write_connections = connections
    script = lua_writes(load_args, bench.admin_key) + lua_pacing(args.webhook_rate, connections)
    load = asyncio.create_task(wrk(bench, "webhooks-paced", script, "/v1/subjects", connections, 3600))
    grant = {"changes": [{**WRITE_KEY, "action": "grant"}], "source": "web", "evidence": EVIDENCE[0]}
    withdraw = {"changes": [{"purpose": WRITE_KEY["purpose"], "partner": WRITE_KEY["partner"],
                             "action": "withdraw"}], "source": "app", "evidence": EVIDENCE[1]}
    acknowledged: dict[str, float] = {}
    meter = CpuMeter(bench.server_pid, bench.database, dict(extra))
    try:
        await asyncio.sleep(max(1.0, args.warmup))
        if load.done():
            await load  # it failed: raise its error
        if bench.wrk_proc is not None:
            meter.extra_pids["wrk"] = bench.wrk_proc.pid
        meter.start()
        started = time.monotonic()
        for n in range(args.webhook_samples):
            subject = f"bench-webhook-probe-{n}"
            await bench.expect(await http.post(f"/v1/subjects/{subject}/consents", headers=bench.admin(),
                                               json=grant), 200)
            answer = await bench.expect(await http.post(f"/v1/subjects/{subject}/consents", headers=bench.admin(),
                                                        json=withdraw), 200)
            acknowledged[answer["receipts"][0]["event_id"]] = time.time()
            await asyncio.sleep(max(0.0, started + (n + 1) * PROBE_EVERY - time.monotonic()))
        cpu = meter.stop()
    finally:
        bench.interrupt_wrk()
    figures = await load
    bench.flag_errors("webhooks (paced writes)", figures)
    deadline = time.monotonic() + ARRIVAL_WAIT
    while time.monotonic() < deadline and not acknowledged.keys() <= receiver.arrived.keys():
        await asyncio.sleep(0.1)
    probes = sorted(1000 * max(0.0, receiver.arrived[e] - t) for e, t in acknowledged.items() if e in receiver.arrived)
    await _drained(bench, webhook_id, ARRIVAL_WAIT)
    if len(probes) < len(acknowledged):
        bench.problems.append(f"run webhooks: {len(acknowledged) - len(probes)} probes never reached the receiver")
    return {"writes": figures, "cpu": cpu, "connections": connections, "asked_rate": args.webhook_rate,
            "probes": len(acknowledged), "probes_arrived": len(probes),
            "probe_p50_ms": percentile(probes, 50), "probe_p99_ms": percentile(probes, 99),
            "probe_max_ms": probes[-1] if probes else None, **await _arrivals(bench, receiver, webhook_id, since)}


async def _decisions(bench: Bench, http: httpx.AsyncClient, webhook_id: str, extra: dict[str, int]) -> dict[str, Any]:
    """Decisions at full speed (--connections): alone, beside writes paced near BESIDE_RATE with the webhook
    disabled, and beside the same writes each heard by the webhook: what deliveries cost decisions."""
    args = bench.args
    path = f"/v1/partners/{WRITE_KEY['partner']}/webhooks/{webhook_id}"
    decide = lua_decisions(args, await partner_token(bench, http))
    figures: dict[str, Any] = {}
    for label, enabled in (("alone", None), ("beside_writes", False), ("beside_writes_and_deliveries", True)):
        await wait_quiet(bench, f"webhooks (decisions {label})")
        load = None
        if enabled is not None:
            await bench.expect(await http.patch(path, headers=bench.admin(), json={"enabled": enabled}), 200)
            load_args = argparse.Namespace(**{**vars(args), "subject_prefix": f"{args.subject_prefix}{label}-"})
            writes = lua_writes(load_args, bench.admin_key) + lua_pacing(BESIDE_RATE, args.write_connections)
            load = asyncio.create_task(wrk(bench, "webhooks-beside", writes, "/v1/subjects", args.write_connections,
                                           int(args.duration + args.warmup + 2)))
            await asyncio.sleep(args.warmup)
        meter = CpuMeter(bench.server_pid, bench.database, dict(extra))
        meter.start()
        figures[label] = await wrk(bench, "webhooks-decisions", decide, "/v1/decisions", args.connections,
                                   int(args.duration))
        cpu = figures[label]["cpu"] = meter.stop()
        # The server's own CPU a decision: what the rest of the machine takes does not count against it.
        figures[label]["server_us_per_decision"] = 10_000 * cpu["server_core_pct"] / figures[label]["rps"]
        bench.flag_errors(f"webhooks (decisions {label})", figures[label])
        if load is not None:
            figures[label]["writes_beside"] = await load
    return figures


async def _head(bench: Bench) -> int:
    return (await bench.sql("SELECT coalesce(max(position), 0) AS p FROM events"))[0]["p"]


async def _arrivals(bench: Bench, receiver: Receiver, webhook_id: str, since: int) -> dict[str, Any]:
    """Commit (`recorded_at`) to the receiver for every delivery of events after position `since`."""
    rows = await bench.sql("SELECT d.event_id::text AS event_id, extract(epoch FROM e.recorded_at) AS committed "
                           "FROM webhook_deliveries d JOIN events e ON e.event_id = d.event_id "
                           "WHERE d.webhook_id = $1 AND e.position > $2", webhook_id, since)
    every = sorted(1000 * max(0.0, receiver.arrived[r["event_id"]] - float(r["committed"]))
                   for r in rows if r["event_id"] in receiver.arrived)
    if len(every) < len(rows):
        bench.problems.append(f"run webhooks: {len(rows) - len(every)} deliveries never reached the receiver")
    return {"deliveries": len(rows), "deliveries_arrived": len(every),
            "commit_to_receiver_p50_ms": percentile(every, 50), "commit_to_receiver_p99_ms": percentile(every, 99),
            "commit_to_receiver_max_ms": every[-1] if every else None}


def _log(result: dict[str, Any]) -> None:
    without, with_hook, paced = result["writes_without_webhook"], result["writes_with_webhook"], result["paced"]
    log(f"  writes at full speed: {without['rps']:,.0f}/s without a webhook, {with_hook['rps']:,.0f}/s with one "
        f"hearing every write ({with_hook['rps'] / without['rps']:.2f}; server CPU a write "
        f"{without['server_us_per_write']:.0f} / {with_hook['server_us_per_write']:.0f} µs); backlog delivered "
        f"{result['drained_after_s']} s after; commit -> receiver p50 "
        f"{fmt(with_hook['commit_to_receiver_p50_ms'], 1)} ms, p99 {fmt(with_hook['commit_to_receiver_p99_ms'], 1)} "
        f"ms, max {fmt(with_hook['commit_to_receiver_max_ms'], 1)} ms ({with_hook['deliveries_arrived']:,} of "
        f"{with_hook['deliveries']:,})")
    log(f"  paced: {paced['writes']['rps']:,.0f} writes/s (p99 {fmt(paced['writes']['p99_ms'], 2)} ms); "
        f"withdrawal answered -> receiver p50 {fmt(paced['probe_p50_ms'], 1)} ms, p99 "
        f"{fmt(paced['probe_p99_ms'], 1)} ms, max {fmt(paced['probe_max_ms'], 1)} ms "
        f"({paced['probes_arrived']} of {paced['probes']})")
    log(f"  every delivery, commit -> receiver: p50 {fmt(paced['commit_to_receiver_p50_ms'], 1)} ms, p99 "
        f"{fmt(paced['commit_to_receiver_p99_ms'], 1)} ms, max {fmt(paced['commit_to_receiver_max_ms'], 1)} ms "
        f"({paced['deliveries_arrived']:,} of {paced['deliveries']:,})")
    decisions = result["decisions"]
    log("  decisions at full speed: " + ", ".join(
        f"{label.replace('_', ' ')} {figures['rps']:,.0f}/s ({figures['server_us_per_decision']:.0f} µs of server "
        f"CPU each)" + (
            f" (writes {figures['writes_beside']['rps']:,.0f}/s)" if "writes_beside" in figures else "")
        for label, figures in decisions.items()))
