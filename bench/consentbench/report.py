"""The printed report: the header, the table of the default runs, the lag, propagation and scale
sections, and the checks against the targets."""

from __future__ import annotations

import argparse
from typing import Any

from consentbench.checks import RUNS, verdicts
from consentbench.figures import fmt
from consentbench.harness import Bench
from consentbench.privacy import privacy_lines
from consentbench.workload import PARTNER


def cpu_text(cpu: dict[str, Any], load: str = "wrk") -> str:
    parts = [f"server {fmt(cpu.get('server_core_pct'))}"]
    extra = cpu.get("extra_core_pct", {})
    parts += [f"{label} {fmt(value)}" for label, value in extra.items() if label != "wrk"]
    parts += [f"pg {fmt(cpu.get('postgres_core_pct'))}",
              f"{load} {fmt(extra['wrk'] if 'wrk' in extra else cpu.get('wrk_core_pct'))}",
              f"bench {fmt(cpu.get('bench_core_pct'))}", f"other {fmt(cpu.get('other_core_pct'))}"]
    return "cpu % of a core: " + ", ".join(parts)


def busy_warning(name: str, cpu: dict[str, Any], run: dict[str, Any] | None = None) -> list[str]:
    other = cpu.get("other_core_pct") or 0
    if other <= 15:
        return []
    if run is not None and (run.get("pg_sessions_opened") or 0) > run["connections"]:
        return [f"  (other {other:.0f}% during {name}: the server opened {run['pg_sessions_opened']} PostgreSQL "
                f"sessions, whose backends' CPU counts as other)"]
    return [f"  WARNING: other processes used {other:.0f}% of a core during {name}: figures are skewed "
            f"(rerun on a quiet machine)"]


def extra_sections(bench: Bench) -> list[str]:
    args = bench.args
    runs = bench.results.get("runs", {})
    lines: list[str] = []
    if "privacy" in runs:
        lines += privacy_lines(runs["privacy"], args.latency_connections)
    if "lag" in runs:
        r = runs["lag"]
        errors = r["non_2xx"] + r["socket_errors"]
        paced = f" paced near {r['write_rate_target']:g}/s" if r.get("write_rate_target") else ""
        lines += ["", f"publish lag (lag): POST .../consents, 1 change, {r['connections']} connections{paced}, "
                      f"{r['seconds']:.0f} s, server with CONSENT_NATS_URL={args.nats}; service {r.get('service')}",
                  f"  stream {r['stream']}, plain nats-py subscriber in this process on {r['subject_filter']}",
                  f"  writes: {fmt(r['rps'])} req/s, p50 {fmt(r['p50_ms'], 2)} ms, p99 {fmt(r['p99_ms'], 2)} ms, "
                  f"max {fmt(r['max_ms'], 1)} ms, {errors} errors; {cpu_text(r.get('cpu', {}))}; "
                  f"{r.get('pg_sessions_opened', '-')} PostgreSQL sessions opened during the run",
                  f"  lag, CloudEvent time to receipt:  p50 {fmt(r['lag_p50_ms'], 2)} ms, "
                  f"p90 {fmt(r['lag_p90_ms'], 2)} ms, p99 {fmt(r['lag_p99_ms'], 2)} ms, "
                  f"max {fmt(r['lag_max_ms'], 1)} ms over {r['messages']:,} messages "
                  f"(events of the measured {r['seconds']:.0f} s)",
                  f"  lag, recorded_at to receipt:      p50 {fmt(r['lag_recorded_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['lag_recorded_p99_ms'], 2)} ms, max {fmt(r['lag_recorded_max_ms'], 1)} ms "
                  f"(recorded_at read from the database by position after the run)",
                  f"  lag, answer to receipt (lower bound): p50 {fmt(r['lag_lower_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['lag_lower_p99_ms'], 2)} ms, max {fmt(r['lag_lower_max_ms'], 1)} ms over "
                  f"{r['probe_writes']} probe writes from this process, one at a time among the load (a write is "
                  f"answered after its commit; below 0: the message came before the answer)",
                  "  (the first two take times from before the write's statement commits: upper bounds of commit "
                  "to receipt;\n   `time` is occurred_at, taken before the write's transaction; recorded_at, just "
                  "before its statement)",
                  f"  received {r['received']:,} of the {r['subject_events']:,} subject events in the log "
                  f"(missing {r['missing']}, duplicates {r['duplicates']}); relay {r.get('relay')}"]
        lines += busy_warning("lag", r.get("cpu", {}), r)
    if "propagation" in runs:
        r = runs["propagation"]
        errors = r["non_2xx"] + r["socket_errors"]
        lines += ["", f"propagation (propagation): servers A and B, one database, one NATS stream, same signing key; "
                      f"relay leader {r['relay_leader']}; service {r.get('service')}",
                  f"  background on A: POST .../consents at {r['background_connections']} connections, "
                  f"{fmt(r['rps'])} req/s over {r['seconds']:.0f} s, p99 {fmt(r['p99_ms'], 2)} ms, {errors} errors",
                  f"  probe subject {r['probe_subject']}: grant/withdraw marketing for {PARTNER} on A (admin), "
                  f"then POST /v1/decisions on B (admin, partner {PARTNER}) in a loop",
                  f"  A's answer to B's first changed decision: p50 {fmt(r['propagation_p50_ms'], 2)} ms, "
                  f"p90 {fmt(r['propagation_p90_ms'], 2)} ms, p99 {fmt(r['propagation_p99_ms'], 2)} ms, "
                  f"max {fmt(r['propagation_max_ms'], 1)} ms over {r['samples']} probes",
                  f"    {r['polls_mean']:.1f} decisions on B a probe on average, changed at the first one in "
                  f"{r['changed_at_first_poll']}; {r['timeouts']} probes unchanged after 5 s; probe writes on A "
                  f"p50 {fmt(r['probe_write_p50_ms'], 2)} ms, p99 {fmt(r['probe_write_p99_ms'], 2)} ms",
                  f"  with min_position = A's answer's position: {r['stale_with_min_position']} stale answers of "
                  f"{r['samples']} (answer position below min_position: {r['position_behind_min_position']}); "
                  f"that answer took p50 {fmt(r['min_position_p50_ms'], 2)} ms, "
                  f"p99 {fmt(r['min_position_p99_ms'], 2)} ms, max {fmt(r['min_position_max_ms'], 1)} ms",
                  f"  {cpu_text(r.get('cpu', {}))} (server = A, during the probes)"]
        lines += busy_warning("propagation", r.get("cpu", {}))
    if "scale" in runs and runs["scale"].get("sizes"):
        scale = runs["scale"]
        sizes = scale["sizes"]
        first = next(iter(sizes.values()))
        lines += ["", f"scale (scale): 10 consents a subject bulk-seeded (COPY), read models by `consent projections "
                      f"rebuild`, subject cache {first['cache_size']:,}; decisions as {PARTNER} over random subjects"]
        header = (f"{'subjects':>10}{'events':>12}{'seed s':>8}{'rebuild/s':>11}{'rps@' + str(args.connections):>9}"
                  f"{'p99':>7}{'p50@' + str(args.latency_connections):>7}{'p99':>7}{'max':>7}{'err':>5}"
                  f"{'RSS MB start/warm/end':>23}{'other%':>8}{'total s':>8}")
        lines += [header, "-" * len(header)]
        for n, r in sizes.items():
            d, lat = r.get("decisions", {}), r.get("latency", {})
            if not d or not lat:
                continue
            errors = d["non_2xx"] + d["socket_errors"] + lat["non_2xx"] + lat["socket_errors"]
            other = max(d.get("cpu", {}).get("other_core_pct") or 0, lat.get("cpu", {}).get("other_core_pct") or 0)
            rss = f"{fmt(r.get('rss_mb_started'))}/{fmt(r.get('rss_mb_warm'))}/{fmt(r.get('rss_mb'))}"
            lines.append(f"{int(n):>10,}{r['seed']['events']:>12,}{r['seed']['seconds']:>8.1f}"
                         f"{r['rebuild']['events_per_s']:>11,}{fmt(d['rps']):>9}{fmt(d['p99_ms'], 1):>7}"
                         f"{fmt(lat['p50_ms'], 2):>7}{fmt(lat['p99_ms'], 2):>7}{fmt(lat['max_ms'], 1):>7}{errors:>5}"
                         f"{rss:>23}{fmt(other):>8}{fmt(r.get('seconds_total')):>8}")
        lines.append("  (seed s: INSERT ... SELECT, index builds and VACUUM ANALYZE; rebuild/s: events/s as "
                     "`consent projections rebuild` prints it;\n   RSS of the server: at start, after the cache was "
                     "filled by batch decisions, after the two runs)")
        for n, r in sizes.items():
            s, b = r["seed"], r["rebuild"]
            lines.append(f"  {int(n):,}: seed {s['events']:,} events in {s['seconds']} s "
                         f"(insert {s['insert_seconds']} s, indexes {s['indexes_seconds']} s, "
                         f"vacuum analyze {s['vacuum_analyze_seconds']} s); "
                         f"rebuild: {b['output']}; ANALYZE of the read models {fmt(r['analyze']['seconds'], 1)} s "
                         f"(autovacuum {r['analyze']['autovacuum']}); database {r['read_models']['database_mb']:,} MB; "
                         f"cache filled in {r['cache_warm_seconds']} s; answers {r['answer_mix']}; "
                         f"service {r.get('service')}")
            for key in ("decisions", "latency"):
                if key in r:
                    run = r[key]
                    cpu = run.get("cpu", {})
                    per_request = (None if cpu.get("server_core_pct") is None or not run["rps"]
                                   else 10_000 * cpu["server_core_pct"] / run["rps"])
                    lines += [f"  {int(n):,} {key} ({run['connections']} connections): {cpu_text(cpu)}; server "
                              f"{fmt(per_request)} us CPU a request; {run.get('pg_sessions_opened', '-')} "
                              f"PostgreSQL sessions opened"]
                    lines += busy_warning(f"scale {n} {key}", cpu, run)
        if len(sizes) > 1:
            lines.append(f"  ratios, {scale['largest']:,} over {scale['smallest']:,} subjects: decisions/s "
                         f"{fmt(scale['rps_ratio'], 2)}, p99 at {args.latency_connections} connections "
                         f"{fmt(scale['p99_ratio'], 2)}, p99 at {args.connections} connections "
                         f"{fmt(scale['p99_ratio_at_throughput'], 2)}")
    return lines


def main_table(args: argparse.Namespace, runs: dict[str, Any]) -> list[str]:
    lines = [""]
    header = (f"{'run':<32}{'conns':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'errors':>7}"
              f"{'srv us/req':>11}  {'cpu % of a core: server  pg  load other':>40}")
    lines += [header, "-" * len(header)]
    labels = {"ceiling": "GET /health/live (ceiling)", "decisions": "POST /v1/decisions",
              "latency": "POST /v1/decisions (latency)", "batch": f"POST /v1/decisions/batch x{args.batch_size}",
              "writes": "POST .../consents, 1 change", "baseline": "raw asyncpg tx (insert+upsert)"}
    for name in RUNS:
        run = runs.get(name)
        if run is None:
            continue
        cpu = run.get("cpu", {})
        load = cpu.get("wrk_core_pct") if name != "baseline" else cpu.get("bench_core_pct")
        errors = run["non_2xx"] + run["socket_errors"]
        usage = "".join(f"{fmt(v):>6}" for v in (cpu.get("server_core_pct"), cpu.get("postgres_core_pct"),
                                                 load, cpu.get("other_core_pct")))
        per_request = (None if cpu.get("server_core_pct") is None or not run["rps"]
                       else 10_000 * cpu["server_core_pct"] / run["rps"])
        run["server_cpu_us_per_request"] = per_request
        lines.append(f"{labels[name]:<32}{run['connections']:>6}{fmt(run['rps']):>10}{fmt(run['p50_ms'], 2):>9}"
                     f"{fmt(run['p99_ms'], 2):>9}{fmt(run['max_ms'], 1):>9}{errors:>7}{fmt(per_request):>11}"
                     f"  {usage:>40}")
        if name == "batch":
            lines.append(f"{'  = decisions/s':<32}{'':>6}{fmt(run['decisions_per_s']):>10}")
    lines.append("  (srv us/req: server CPU time per request; cpu: load = wrk, or this process for the asyncpg "
                 "baseline;\n   pg = the bench database's backends and PostgreSQL's background writers; "
                 "other = the rest of the machine)")
    # With --url the server's PostgreSQL backends are not told apart: they count as other.
    busy = [f"{name} {runs[name]['cpu']['other_core_pct']:.0f}%" for name in RUNS
            if name in runs and (runs[name].get("cpu", {}).get("other_core_pct") or 0) > 15
            and (runs[name]["cpu"].get("postgres_core_pct") is not None or name in ("ceiling", "decisions",
                                                                                    "latency", "batch"))
            and (runs[name]["cpu"].get("server_core_pct") is not None or name == "baseline")
            # Backends that come and go during the run count as other: not someone else's load.
            and (runs[name].get("pg_sessions_opened") or 0) <= runs[name]["connections"]]
    if busy:
        lines.append(f"  WARNING: the machine was not quiet: other processes used up to a core during "
                     f"{', '.join(busy)}: figures are skewed (compare ratios, rerun on a quiet machine)")
    if "baseline" in runs:
        lines.append(f"  (baseline: PostgreSQL fsync={runs['baseline']['fsync']}, "
                     f"synchronous_commit={runs['baseline']['synchronous_commit']})")
    churn = [f"{name} {run['pg_sessions_opened']:,} ({run['pg_sessions_opened'] / max(1, run['requests']):.2f} "
             f"a request)" for name, run in runs.items() if run.get("pg_sessions_opened")]
    if churn:
        lines.append("  (PostgreSQL sessions the server opened during a run: " + ", ".join(churn)
                     + ";\n   the CPU of backends that started or ended during a run is not in pg but in other)")
    if "writes" in runs and "events_appended" in runs["writes"]:
        w = runs["writes"]
        lines.append(f"  (writes: {w['events_appended']} events appended for {w['warmup_requests']} warm-up + "
                     f"{w['requests']} measured requests, plus up to {w['in_flight_at_stop']} in flight when wrk "
                     f"stopped: one event a request)")
    return lines


def report(bench: Bench, meta: dict[str, Any]) -> str:
    args = bench.args
    runs = bench.results.get("runs", {})
    lines = ["", "=" * 108, "consent service benchmark", "=" * 108]
    for key in ("date", "command", "service", "machine", "cpu", "load_generator", "server", "target", "postgres"):
        if meta.get(key):
            lines.append(f"{key:<15} {meta[key]}")
    lines.append(f"{'workload':<15} {args.subjects} subjects (prefix {args.subject_prefix!r}), "
                 f"{args.duration} s a run after {args.warmup} s warm-up, seed {args.seed}")
    if any(name in runs for name in RUNS):
        lines += main_table(args, runs)
    lines += extra_sections(bench)
    lines.append("")
    header = f"{'check':<24}{'measured':>14}{'target':>14}  {'result':<8} what"
    lines += [header, "-" * 108]
    for v in verdicts(runs):
        higher = v["higher_is_better"]
        digits = (2 if "/" in v["check"] and "decisions/s" not in v["check"] and "events/s" not in v["check"]
                  or "ms" in v["check"] or "ratio" in v["check"] else 0)
        target = ("= " if v.get("exact") else ">= " if higher else "< ") + fmt(v["target"], digits)
        result = "n/a" if v["ok"] is None else ("PASS" if v["ok"] else "FAIL")
        lines.append(f"{v['check']:<24}{fmt(v['value'], digits):>14}{target:>14}  {result:<8} {v['what']}")
    if bench.problems:
        lines += ["", "!" * 108, "ERRORS: these runs had failed requests; their figures are not valid:"]
        lines += [f"  {p}" for p in bench.problems]
        lines.append("!" * 108)
    lines.append("")
    return "\n".join(lines)
