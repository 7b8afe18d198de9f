"""The privacy center run (`--only privacy`): the page of a subject with 50 consents, and what serving
pages costs the decision route.

On the bench's server: 12 consent purposes that 4 partners may each use, a subject with 50 grants among
them (60 switches on its page), then `--privacy-pages` sequential GET /privacy-center with its session
cookie (latency p50/p99, and the server's CPU a page), then the latency run of single decisions twice:
alone, and while this process loads pages at 20 a second.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from consentbench.figures import log, percentile
from consentbench.harness import Bench
from consentbench.lua import lua_decisions
from consentbench.machine import process_cpu_seconds
from consentbench.seed import partner_token
from consentbench.wrk_runs import run_wrk

PURPOSES = [f"pc-purpose-{n:02d}" for n in range(12)]
PARTNERS = [f"pc-partner-{n}" for n in range(4)]
SUBJECT = "pc-subject-50"
PAGES_PER_SECOND = 20


async def privacy_run(bench: Bench, client: httpx.AsyncClient) -> None:
    admin = {"Authorization": f"Bearer {bench.admin_key}"}
    await client.put("/v1/scopes/pc-scope", headers=admin,
                     json={"title": "Page scope", "description": "", "sensitivity": "low"})
    for purpose in PURPOSES:
        await client.put(f"/v1/purposes/{purpose}", headers=admin, json={
            "title": f"Purpose {purpose[-2:]}", "description": "What this purpose does, in a sentence or two.",
            "legal_basis": "consent", "retention": "P1Y6M"})
    for partner in PARTNERS:
        await client.put(f"/v1/partners/{partner}", headers=admin, json={
            "name": partner.title(), "status": "active", "data_uses": {p: ["pc-scope"] for p in PURPOSES}})
    keys = [(p, None) for p in PURPOSES] + [(p, partner) for p in PURPOSES for partner in PARTNERS]
    changes = [{"purpose": p, "partner": partner, "action": "grant"} for p, partner in keys[:50]]
    granted = await client.post(f"/v1/subjects/{SUBJECT}/consents", headers=admin, json={"changes": changes})
    assert granted.status_code == 200 and len(granted.json()["consents"]) == 50, granted.text
    link = await client.post(f"/v1/subjects/{SUBJECT}/privacy-center/sessions", headers=admin)
    entered = await client.get(link.json()["url"])
    session = {"Cookie": f"consent_privacy_center={entered.cookies.get('consent_privacy_center')}"}
    client.cookies.clear()

    switches: list[int] = []

    async def page() -> float:
        started = time.perf_counter()
        answer = await client.get("/privacy-center", headers=session)
        elapsed = (time.perf_counter() - started) * 1000
        assert answer.status_code == 200, answer.status_code
        switches.append(answer.text.count('type="checkbox"'))  # 60 of its purposes, and the bench catalog's
        return elapsed

    for _ in range(20):  # warm-up
        await page()
    pages = bench.args.privacy_pages
    cpu_before = process_cpu_seconds(bench.server_pid)
    times = sorted([await page() for _ in range(pages)])
    cpu_after = process_cpu_seconds(bench.server_pid)
    result: dict[str, Any] = {
        "pages": pages, "switches": switches[-1],
        "page_p50_ms": percentile(times, 50), "page_p99_ms": percentile(times, 99),
        "page_server_cpu_ms": (cpu_after - cpu_before) * 1000 / pages
        if cpu_before is not None and cpu_after is not None else None}
    log(f"  page of a subject with 50 consents: p50 {result['page_p50_ms']:.2f} ms, "
        f"p99 {result['page_p99_ms']:.2f} ms over {pages} sequential pages")

    args = bench.args
    token = await partner_token(bench, client)
    alone = await run_wrk(bench, "privacy-decisions-alone", lua_decisions(args, token), "/v1/decisions",
                          args.latency_connections)
    stop = asyncio.Event()

    async def load_pages() -> int:
        served = 0
        while not stop.is_set():
            await page()
            served += 1
            await asyncio.sleep(1 / PAGES_PER_SECOND)
        return served

    loader = asyncio.create_task(load_pages())
    wait_quiet, args.wait_quiet = args.wait_quiet, 0  # the pages are this run's other load: never a reason to repeat
    try:
        beside = await run_wrk(bench, "privacy-decisions-with-pages", lua_decisions(args, token), "/v1/decisions",
                               args.latency_connections)
    finally:
        args.wait_quiet = wait_quiet
        stop.set()
        served = await loader
    result.update(decisions_alone=_summary(alone), decisions_with_pages=_summary(beside), pages_beside=served)
    bench.results.setdefault("runs", {})["privacy"] = result


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    summary = {key: run.get(key) for key in ("rps", "p50_ms", "p99_ms", "non_2xx", "socket_errors", "seconds")}
    cpu = run.get("cpu", {})
    summary["server_core_pct"] = cpu.get("server_core_pct")
    summary["load_core_pct"] = (cpu.get("wrk_core_pct") or 0) + (cpu.get("other_core_pct") or 0)
    return summary


def privacy_lines(result: dict[str, Any], latency_connections: int) -> list[str]:
    alone, beside = result["decisions_alone"], result["decisions_with_pages"]
    cpu = result.get("page_server_cpu_ms")
    return ["", f"privacy center (privacy): a subject with 50 consents (among 12 purposes x 4 partners), "
                f"{result['switches']} switches on its page",
            f"  page: p50 {result['page_p50_ms']:.2f} ms, p99 {result['page_p99_ms']:.2f} ms over "
            f"{result['pages']} sequential GET /privacy-center"
            + (f"; server CPU {cpu:.2f} ms a page" if cpu is not None else ""),
            f"  decisions at {latency_connections} connections alone: {alone['rps']:,.0f} req/s, "
            f"p50 {alone['p50_ms']:.2f} ms, p99 {alone['p99_ms']:.2f} ms; server {alone['server_core_pct']}% "
            f"of a core, load generators {alone['load_core_pct']:.0f}%",
            f"  the same while pages are loaded at up to {PAGES_PER_SECOND}/s ({result['pages_beside']} pages): "
            f"{beside['rps']:,.0f} req/s, p50 {beside['p50_ms']:.2f} ms, p99 {beside['p99_ms']:.2f} ms; server "
            f"{beside['server_core_pct']}% of a core, load generators (wrk and this process) "
            f"{beside['load_core_pct']:.0f}%"]
