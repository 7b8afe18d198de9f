"""Running wrk: one run, the warm-up before a measured run, the CPU meter around it, and waiting for a
quiet machine (--wait-quiet)."""

from __future__ import annotations

import asyncio
import json
import shlex
import time
from typing import Any

from consentbench.cpu_meter import CpuMeter
from consentbench.figures import log
from consentbench.harness import Bench


async def wrk(bench: Bench, name: str, script: str, path: str, connections: int, duration: int) -> dict[str, Any]:
    script_path = bench.tmp / f"{name}.lua"
    script_path.write_text(script)
    command = [bench.args.wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
               "-s", str(script_path), f"{bench.base_url}{path}", "--", str(bench.wrk_runs)]
    bench.wrk_runs += 1
    # bench.wrk_proc is the latest run's, for interrupt_wrk and the clean-up; two may run at once.
    process = bench.wrk_proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await process.communicate()
    code = process.returncode
    if bench.wrk_proc is process:
        bench.wrk_proc = None
    line = next((x for x in stdout.decode().splitlines() if x.startswith("BENCH_RESULT ")), None)
    if code != 0 or line is None:
        raise RuntimeError(f"wrk failed ({code}): {shlex.join(command)}\n{stdout.decode()}{stderr.decode()}")
    result = json.loads(line[len("BENCH_RESULT "):])
    seconds = result["duration_us"] / 1e6
    errors = result["errors"]
    socket_errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    non_2xx = sum(result["statuses"].values())
    return {"connections": connections, "requests": result["requests"], "seconds": round(seconds, 3),
            "rps": result["requests"] / seconds if seconds else 0.0,
            "p50_ms": result["latency_us"]["p50"] / 1000, "p90_ms": result["latency_us"]["p90"] / 1000,
            "p99_ms": result["latency_us"]["p99"] / 1000, "p999_ms": result["latency_us"]["p999"] / 1000,
            "max_ms": result["latency_us"]["max"] / 1000, "non_2xx": non_2xx, "statuses": result["statuses"],
            "socket_errors": socket_errors, "errors": errors, "command": shlex.join(command)}


async def wait_quiet(bench: Bench, name: str) -> None:
    """With --wait-quiet: wait until the rest of the machine uses under 15 % of a core for 3 s."""
    if bench.args.wait_quiet <= 0:
        return
    deadline = time.monotonic() + bench.args.wait_quiet
    quiet, waited = 0, False
    while quiet < 3:
        meter = CpuMeter(bench.server_pid, bench.database if bench.server else None)
        meter.start()
        await asyncio.sleep(1)
        other = meter.stop()["other_core_pct"] or 0
        quiet = quiet + 1 if other < 15 else 0
        if quiet == 0:
            if time.monotonic() > deadline:
                log(f"  (machine still busy before {name}: {other:.0f}% of a core used by others; going on)")
                return
            waited = True
    if waited:
        log(f"  (waited for a quiet machine before {name})")


async def run_wrk(bench: Bench, name: str, script: str, path: str, connections: int,
                  extra_pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Warm-up, then the measured run; with --wait-quiet, a run that other processes disturbed
    (over 25 % of a core) is repeated, at most twice."""
    for attempt in range(3):
        result = await _run_wrk_once(bench, name, script, path, connections, extra_pids)
        other = result["cpu"].get("other_core_pct") or 0
        churn = (result.get("pg_sessions_opened") or 0) > connections  # then other is PostgreSQL's
        if bench.args.wait_quiet <= 0 or other <= 25 or churn or attempt == 2:
            return result
        log(f"  (run {name} disturbed: other processes used {other:.0f}% of a core; repeating it)")
    raise AssertionError("unreachable")


async def _run_wrk_once(bench: Bench, name: str, script: str, path: str, connections: int,
                        extra_pids: dict[str, int] | None = None) -> dict[str, Any]:
    bench.check_server_alive()
    await wait_quiet(bench, name)
    warmup = None
    if bench.args.warmup > 0:
        warmup = await wrk(bench, f"{name}-warmup", script, path, connections, bench.args.warmup)
        bench.flag_errors(f"{name} (warm-up)", warmup)
    meter = CpuMeter(bench.server_pid, bench.database if bench.server else None, extra_pids)
    sessions = await bench.pg_sessions() if bench.server else None
    meter.start()
    started = time.time()
    result = await wrk(bench, name, script, path, connections, bench.args.duration)
    result["cpu"] = meter.stop()
    bench.measured_window = (started, time.time())
    if sessions is not None:
        # Connections the server opened during the run: a pool too small for the concurrency
        # opens and closes them all the time, and their backends' CPU escapes the pg column.
        await asyncio.sleep(1.0)  # backends report their statistics within a second
        result["pg_sessions_opened"] = (await bench.pg_sessions() or 0) - sessions
    result["warmup_requests"] = warmup["requests"] if warmup else 0
    bench.check_server_alive()
    bench.flag_errors(name, result)
    return result
