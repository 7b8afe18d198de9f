"""Seeding over HTTP: the catalog and a partner credential, the subjects' consents, then the cache
warmed by batch decisions and a sample of the answer mix."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import random
import secrets
import time
from collections import Counter

import httpx

from consentbench.figures import log, percentile
from consentbench.harness import Bench
from consentbench.workload import EVIDENCE, PARTNER, PARTNERS, PURPOSES, QUESTIONS, SCOPES, subject_id, subject_plan


async def seed_catalog(bench: Bench, client: httpx.AsyncClient) -> None:
    for scope, sensitivity in SCOPES.items():
        await bench.expect(await client.put(f"/v1/scopes/{scope}", headers=bench.admin(), json={
            "title": scope.replace(".", " ").title(), "description": f"The subject's {scope}",
            "sensitivity": sensitivity}), 200, 201)
    for purpose, body in PURPOSES.items():
        await bench.expect(await client.put(f"/v1/purposes/{purpose}", headers=bench.admin(), json=body), 200, 201)
    for partner, body in PARTNERS.items():
        await bench.expect(await client.put(f"/v1/partners/{partner}", headers=bench.admin(), json=body), 200, 201)
    issued = await bench.expect(await client.post(f"/v1/partners/{PARTNER}/credentials", headers=bench.admin()), 201)
    bench.credential = (issued["client_id"], issued["client_secret"])
    log(f"catalog: {len(SCOPES)} scopes, {len(PURPOSES)} purposes, {len(PARTNERS)} partners; "
        f"credential {issued['client_id']} for {PARTNER}")


async def partner_token(bench: Bench, client: httpx.AsyncClient) -> str:
    assert bench.credential is not None
    issued = await bench.expect(await client.post("/v1/oauth/token", data={
        "grant_type": "client_credentials", "client_id": bench.credential[0],
        "client_secret": bench.credential[1]}), 200)
    return issued["access_token"]


async def revoke_credential(bench: Bench, client: httpx.AsyncClient) -> None:
    if bench.credential is not None:
        with contextlib.suppress(httpx.HTTPError):
            await client.delete(f"/v1/partners/{PARTNER}/credentials/{bench.credential[0]}",
                                headers=bench.admin())
        bench.credential = None


async def seed_subjects(bench: Bench, client: httpx.AsyncClient) -> None:
    args = bench.args
    rng = random.Random(args.seed)
    now = dt.datetime.now(dt.UTC)
    plans = [subject_plan(rng, now) for _ in range(args.subjects)]
    sources = ["web", "app", "api"]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(args.subjects):
        queue.put_nowait(i)
    stats: Counter[str] = Counter()
    run_tag = secrets.token_hex(4)
    latencies: list[float] = []
    failures: list[str] = []

    async def worker() -> None:
        while not queue.empty() and len(failures) < 5:
            i = queue.get_nowait()
            sid = subject_id(args.subject_prefix, bench.width, i)
            for n, changes in enumerate(plans[i]):
                body = {"changes": changes, "source": sources[i % 3], "evidence": EVIDENCE[(i + n) % 3]}
                # An Idempotency-Key makes a retry after a dropped connection apply the change once.
                headers = {**bench.admin(), "Idempotency-Key": f"bench-seed-{run_tag}-{i}-{n}"}
                started = time.perf_counter()
                for attempt in range(3):
                    try:
                        answer = await client.post(f"/v1/subjects/{sid}/consents", headers=headers, json=body)
                        break
                    except httpx.TransportError as error:
                        stats["retried after a transport error"] += 1
                        if attempt == 2:
                            failures.append(f"POST /v1/subjects/{sid}/consents: {error!r}")
                            return
                        await asyncio.sleep(0.2)
                latencies.append(time.perf_counter() - started)
                stats["requests"] += 1
                stats["changes"] += len(changes)
                for change in changes:
                    stats[f"{change['action']}{'' if change.get('partner') is None else ' (partner)'}"] += 1
                if answer.status_code != 200:
                    failures.append(f"POST /v1/subjects/{sid}/consents {json.dumps(body)} -> "
                                    f"{answer.status_code} {answer.text[:500]}")
                    return

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.seed_concurrency)))
    elapsed = time.monotonic() - started
    if failures:
        raise RuntimeError("seeding failed:\n  " + "\n  ".join(failures))
    latencies.sort()
    retried = stats.pop("retried after a transport error", 0)
    mix = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k not in ("requests", "changes"))
    log(f"seed: {args.subjects} subjects, {stats['requests']} requests, {stats['changes']} changes in "
        f"{elapsed:.1f} s ({stats['requests'] / elapsed:.0f} requests/s at {args.seed_concurrency} in flight "
        f"from httpx; p50 {1000 * percentile(latencies, 50):.1f} ms, "
        f"p99 {1000 * percentile(latencies, 99):.1f} ms)")
    log(f"seed: changes by kind: {mix}" + (f"; {retried} requests retried after a dropped connection"
                                            if retried else ""))
    bench.results["seed"] = {"subjects": args.subjects, "requests": stats["requests"],
                            "changes": stats["changes"], "seconds": round(elapsed, 2), "retried": retried,
                            "by_kind": {k: v for k, v in stats.items() if k not in ("requests", "changes")}}


async def warm_and_sample(bench: Bench, client: httpx.AsyncClient, token: str) -> None:
    """Load every seeded subject into the server's cache (batch decisions), then sample the answer mix."""
    args = bench.args
    rng = random.Random(args.seed + 5)
    weighted = [(purpose, scopes) for weight, purpose, scopes in QUESTIONS for _ in range(weight)]
    auth = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    for first in range(0, args.subjects, 1000):
        items = [{"subject_id": subject_id(args.subject_prefix, bench.width, i), "purpose": "marketing",
                  "scopes": ["profile.email"]} for i in range(first, min(first + 1000, args.subjects))]
        await bench.expect(await client.post("/v1/decisions/batch", headers=auth, json={"items": items}), 200)
    log(f"cache: {args.subjects} subjects read by batch decisions in {time.monotonic() - started:.2f} s "
        f"(cold: database reads)")
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for _ in range(args.sample):
        purpose, scopes = rng.choice(weighted)
        sid = subject_id(args.subject_prefix, bench.width, rng.randrange(args.subjects))
        answer = await bench.expect(await client.post("/v1/decisions", headers=auth, json={
            "subject_id": sid, "purpose": purpose, "scopes": scopes}), 200)
        decisions[answer["decision"]] += 1
        for denied in answer["denied"]:
            reasons[denied["reason"]] += 1
    total = sum(decisions.values()) or 1
    log("answers: " + ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in decisions.most_common())
        + "; denied scopes by reason: " + ", ".join(f"{k} {v}" for k, v in reasons.most_common())
        + f" (sample of {args.sample} single decisions)")
    bench.results["answer_mix"] = {"decisions": dict(decisions), "denied_reasons": dict(reasons),
                                  "sample": args.sample}


async def position(bench: Bench, client: httpx.AsyncClient, token: str) -> int:
    answer = await bench.expect(await client.post("/v1/decisions", headers={"Authorization": f"Bearer {token}"},
                                                 json={"subject_id": "bench-position", "purpose": "marketing",
                                                       "scopes": ["profile"]}), 200)
    return answer["position"]
