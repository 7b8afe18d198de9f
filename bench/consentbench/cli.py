#!/usr/bin/env python3
"""Benchmark of the consent service: decisions, batch decisions and consent writes against
baselines measured in the same run (see docs/performance.md).

    .venv/bin/python bench/bench.py                      # fresh database + one server, all runs
    .venv/bin/python bench/bench.py --subjects 2000 --duration 5
    .venv/bin/python bench/bench.py --url http://127.0.0.1:8000 --admin-key KEY [--skip-seed]

By default it creates a PostgreSQL database `consent_bench_<random>` on --postgres, migrates it,
starts one uvicorn worker (uvloop, httptools) on a free port, seeds a catalog and --subjects
subjects, then runs wrk (one thread, Lua scripts) against it and a raw asyncpg write baseline
in this process. Everything it started or created is stopped or dropped at the end, also on
error or Ctrl-C. With --url it targets a running server and creates only seeded data (plus a
scratch database for the asyncpg baseline, dropped at the end).

Runs (--only takes a comma list of these names):
  ceiling    GET /health/live at --connections (the framework's ceiling)
  decisions  POST /v1/decisions at --connections (throughput)
  latency    POST /v1/decisions at --latency-connections (p50/p99 below saturation)
  batch      POST /v1/decisions/batch, --batch-size items, at --batch-connections
  writes     POST /v1/subjects/{id}/consents, one change a request, at --write-connections
  baseline   raw asyncpg: BEGIN; INSERT event; UPSERT state; COMMIT at --baseline-connections

Runs that happen only when named in --only (each starts its own database and servers; not with --url):
  lag          publish lag: the write load of `writes` on a server with CONSENT_NATS_URL, a plain
               NATS subscriber in this process; receipt time minus the CloudEvent `time` (an upper
               bound of commit to receipt), p50/p99/max (target p99 < 20 ms)
  propagation  two servers on one database and one NATS stream, wrk writes on A at
               --propagation-connections; a probe toggles a grant on A and polls B's decision until it
               flips (target p50 < 10 ms, p99 < 50 ms); then the same with min_position: stale answers
               must be 0
  scale        for each of --scale-subjects: bulk-seed 10 consents a subject with SQL, `consent
               projections rebuild`, then decisions at --connections and --latency-connections over
               random subjects and the server's RSS; ratios between the smallest and largest size
               (targets: within 20 %; rebuild >= 20,000 events/s)
  webhooks     one server on NATS and a receiver in this process: writes at --write-connections with
               no webhook, then with one hearing every write; then writes paced near --webhook-rate
               and a probe withdrawal every 0.1 s: answer to receiver (target p99 < 1 s), and commit
               to receiver for every delivery

Exit status: 0 when every run completed without errors (whether or not targets were met),
1 when some request failed (non-2xx, socket errors) or the bench broke, 2 when wrk is missing.
"""

# This docstring is the --help text: its first paragraph the description, the rest the epilog.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

from consentbench.checks import EXTRA_RUNS, RUNS, SERVER_EXTRAS, TARGETS, verdicts
from consentbench.default_runs import main_part
from consentbench.figures import log
from consentbench.harness import Bench
from consentbench.lag import lag_run
from consentbench.machine import cpu_model, service_revision, wrk_version
from consentbench.propagation import propagation_run
from consentbench.report import report
from consentbench.scale import scale_run
from consentbench.webhooks import webhooks_run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server (a maintenance database on it) where the bench database is "
                             "created and dropped (default: %(default)s)")
    parser.add_argument("--url", help="target this running server instead of starting one")
    parser.add_argument("--admin-key", help="an admin key of the --url server")
    parser.add_argument("--subjects", type=int, default=10_000, help="subjects to seed (default %(default)s)")
    parser.add_argument("--subject-prefix", default="bench-", help="subject ids are PREFIX + zero-padded index")
    parser.add_argument("--duration", type=int, default=10, help="seconds a measured run (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="seconds of warm-up before each run (default %(default)s)")
    parser.add_argument("--connections", type=int, default=64, help="connections for the ceiling and decision "
                                                                     "throughput runs (default %(default)s)")
    parser.add_argument("--latency-connections", type=int, default=8, help="default %(default)s")
    parser.add_argument("--batch-connections", type=int, default=4, help="default %(default)s")
    parser.add_argument("--batch-size", type=int, default=1000, help="items per batch request (default %(default)s)")
    parser.add_argument("--write-connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--baseline-connections", type=int, default=32, help="default %(default)s")
    parser.add_argument("--seed-concurrency", type=int, default=32,
                        help="seeding requests in flight (default %(default)s)")
    parser.add_argument("--skip-seed", action="store_true", help="with --url: subjects were seeded by an earlier run "
                                                                 "with the same --subjects and --subject-prefix")
    parser.add_argument("--only", default=",".join(RUNS),
                        help=f"comma list of runs among {', '.join(RUNS)} (the default), and "
                             f"{', '.join(SERVER_EXTRAS + EXTRA_RUNS)} "
                             f"(only when named)")
    parser.add_argument("--nats", default="nats://127.0.0.1:4222",
                        help="NATS server with JetStream for lag and propagation (default %(default)s); each run "
                             "uses a stream BENCH_<random> and subjects bench<random>.consent.v1.>, deleted at the end")
    parser.add_argument("--propagation-samples", type=int, default=200,
                        help="probes of the propagation run, and as many with min_position (default %(default)s)")
    parser.add_argument("--propagation-connections", type=int, default=8,
                        help="wrk connections writing on server A during the propagation run (default %(default)s)")
    parser.add_argument("--relay", choices=("inline", "process"), default=None,
                        help="CONSENT_RELAY of the lag and propagation servers (default: unset, the service's default)")
    parser.add_argument("--write-rate", type=float, default=None, metavar="PER_SECOND",
                        help="lag and propagation: pace the write load near this many writes/s (wrk delay(), "
                             "jittered) instead of as fast as the server answers; the achieved rate is reported")
    parser.add_argument("--webhook-rate", type=float, default=1000.0, metavar="PER_SECOND",
                        help="webhooks: the paced write load's rate (default %(default)s)")
    parser.add_argument("--webhook-connections", type=int, default=64,
                        help="webhooks: wrk connections of the paced write load (default %(default)s)")
    parser.add_argument("--webhook-samples", type=int, default=200,
                        help="webhooks: probe withdrawals, one every 0.1 s (default %(default)s)")
    parser.add_argument("--webhook-sender", choices=("inline", "process"), default=None,
                        help="CONSENT_WEBHOOK_SENDER of the webhooks server (default: unset, the service's default)")
    parser.add_argument("--scale-subjects", default="10000,1000000",
                        help="comma list of subject counts for the scale run (default %(default)s)")
    parser.add_argument("--scale-cache-size", default="100000",
                        help="comma list of CONSENT_SUBJECT_CACHE_SIZE values: a server for each on every seeded "
                             "size (default %(default)s, the service's default)")
    parser.add_argument("--scale-distribution", default="uniform",
                        help="comma list of how the decisions pick subjects: uniform, zipf (s = 1.1; the cache "
                             "is then filled with the most asked subjects) (default %(default)s)")
    parser.add_argument("--scale-verify", action="store_true",
                        help="scale: time `consent audit verify` over each seeded log (it must pass)")
    parser.add_argument("--scale-skip-analyze", action="store_true",
                        help="scale run: do not ANALYZE subjects and consents after the rebuild (which does not)")
    parser.add_argument("--scale-skip-checkpoints", action="store_true",
                        help="scale run: leave the seeded log uncheckpointed (the first server then catches up)")
    parser.add_argument("--scale-chunk", type=int, default=20_000,
                        help="subjects a COPY in the scale run's seeder (default %(default)s)")
    parser.add_argument("--privacy-pages", type=int, default=500,
                        help="privacy run: sequential pages measured (default %(default)s)")
    parser.add_argument("--sample", type=int, default=300, help="single decisions sampled over HTTP to show the "
                                                                "answer mix (default %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the workload (default %(default)s)")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="before each run, wait up to SECONDS for other processes on the machine to use "
                             "under 15%% of a core, and repeat (twice at most) a run they disturbed "
                             "(default: do not wait; other load is reported either way)")
    parser.add_argument("--server-workers", type=int, default=1, metavar="N",
                        help="uvicorn worker processes of each server the bench starts (default 1: the figures "
                             "are per server process)")
    parser.add_argument("--server", choices=("uvicorn", "granian"), default="uvicorn",
                        help="the ASGI server of every server the bench starts: uvicorn (uvloop, httptools; the "
                             "default) or granian (--interface asgi --loop uvloop; pip install granian)")
    parser.add_argument("--server-nats", action="store_true",
                        help="the default runs' server gets CONSENT_NATS_URL=--nats with a stream BENCH_<random> and "
                             "subjects bench<random>.consent.v1 of its own (deleted at the end), and --relay: "
                             "the relay and the replica feed run beside the requests, as in production")
    parser.add_argument("--server-env", metavar="NAME=VALUE", action="append", default=[],
                        help="a setting for every server the bench starts, e.g. "
                             "CONSENT_WRITE_CACHE_SIZE=0 (repeatable)")
    parser.add_argument("--server-log", metavar="PATH", help="keep the started server's output in PATH "
                                                             "(default: a temporary file, its tail printed)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(RUNS) - set(SERVER_EXTRAS) - set(EXTRA_RUNS))
    if unknown:
        parser.error(f"--only: unknown runs {', '.join(unknown)}; "
                     f"choose among {', '.join(RUNS + SERVER_EXTRAS + EXTRA_RUNS)}")
    args.only = only
    if args.url and set(only) & set(EXTRA_RUNS):
        parser.error(f"--only {', '.join(x for x in EXTRA_RUNS if x in only)}: these runs start their own servers, "
                     f"not with --url")
    try:
        args.scale_subjects = sorted({int(x.replace("_", "")) for x in args.scale_subjects.split(",") if x.strip()})
        args.scale_cache_size = [int(x.replace("_", "")) for x in args.scale_cache_size.split(",") if x.strip()]
    except ValueError:
        parser.error("--scale-subjects takes a comma list of numbers")
    args.scale_distribution = [x.strip() for x in args.scale_distribution.split(",") if x.strip()]
    if not set(args.scale_distribution) <= {"uniform", "zipf"} or not args.scale_distribution:
        parser.error("--scale-distribution takes a comma list of uniform, zipf")
    if not args.scale_cache_size or min(args.scale_cache_size) < 1:
        parser.error("--scale-cache-size takes a comma list of positive numbers")
    if not args.scale_subjects or min(args.scale_subjects) < 1 or args.scale_chunk < 1:
        parser.error("--scale-subjects and --scale-chunk must be positive")
    if args.propagation_samples < 1 or args.propagation_connections < 1:
        parser.error("--propagation-samples and --propagation-connections must be positive")
    if args.server_nats and args.url:
        parser.error("--server-nats configures a server the bench starts, not --url")
    if args.server == "granian" and shutil.which("granian", path=str(Path(sys.executable).parent)) is None:
        try:
            import granian  # noqa: F401
        except ImportError:
            parser.error("--server granian: granian is not installed in this interpreter (pip install granian)")
    if args.url and not args.admin_key:
        parser.error("--url needs --admin-key")
    if args.admin_key and not args.url:
        parser.error("--admin-key goes with --url")
    if args.skip_seed and not args.url:
        parser.error("--skip-seed needs --url (a fresh database has no subjects)")
    if args.subjects < 1 or args.duration <= 0 or args.batch_size < 1:
        parser.error("--subjects, --duration and --batch-size must be positive")
    return args


async def run(bench: Bench) -> None:
    """The runs named in --only, in order: the default ones, then lag, propagation, scale, webhooks."""
    wanted = set(bench.args.only)
    try:
        if wanted & set(RUNS + SERVER_EXTRAS):
            await main_part(bench, wanted)
        for name, method in (("lag", lag_run), ("propagation", propagation_run), ("scale", scale_run),
                             ("webhooks", webhooks_run)):
            if name in wanted:
                started = time.monotonic()
                await method(bench)
                log(f"run {name}: took {time.monotonic() - started:.0f} s")
    finally:
        await bench.end_run()  # what a failed run left behind; nothing after a clean one
        shutil.rmtree(bench.tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not Path(args.wrk).exists() and shutil.which(args.wrk) is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2
    meta = {
        "date": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
        "command": shlex.join(getattr(sys, "orig_argv", [sys.executable, *sys.argv])),
        "machine": f"nproc {os.cpu_count()}, {platform.system()} {platform.release()}, "
                   f"Python {platform.python_version()}",
        "cpu": cpu_model(),
        "service": service_revision(),
        "load_generator": f"{wrk_version(args.wrk)}, -t1, Lua scripts; asyncpg baseline in the bench process",
    }
    bench = Bench(args)
    try:
        import uvloop
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
        meta["load_generator"] += " (uvloop)"
    except ImportError:
        runner = asyncio.Runner()
    status = 0
    try:
        with runner:
            runner.run(run(bench))
    except KeyboardInterrupt:
        print("\ninterrupted: server stopped, database dropped", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - report and fail
        print(f"\nbench failed: {error}", file=sys.stderr)
        status = 1
    if hasattr(bench, "server_command"):
        launcher = bench.server_command[0]
        with contextlib.suppress(ValueError):
            if not os.path.relpath(launcher).startswith(".."):
                launcher = os.path.relpath(launcher)
        meta["server"] = " ".join(["CONSENT_PARTNER_RATE_LIMIT=0", *args.server_env, re.sub(
            r"--port \d+", "--port <free port>", shlex.join([launcher, *bench.server_command[1:]]))])
    if bench.results.get("server_nats"):
        meta["server"] = (meta.get("server", "") + "; " + " ".join(
            f"{k}={v}" for k, v in bench.results["server_nats"].items())).lstrip("; ")
    meta["target"] = bench.base_url
    if "baseline" in bench.results.get("runs", {}):
        b = bench.results["runs"]["baseline"]
        meta["postgres"] = f"{args.postgres} (fsync={b['fsync']}, synchronous_commit={b['synchronous_commit']})"
    if bench.results.get("runs"):
        print(report(bench, meta), flush=True)
    if bench.problems:
        status = 1
    if args.json:
        payload = {"meta": meta, "options": {k: v for k, v in vars(args).items() if k not in ("admin_key",)},
                   **{k: v for k, v in bench.results.items() if k != "server_log_tail"},
                   "checks": verdicts(bench.results.get("runs", {})), "problems": bench.problems,
                   "targets": TARGETS}
        Path(args.json).write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    tail = bench.results.get("server_log_tail")
    if tail:
        print("server log (last lines):\n" + tail)
    elif status and bench.server_log is not None:
        print("server log: empty")
    return status

