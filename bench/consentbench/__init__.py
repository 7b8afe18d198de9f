"""The consent service's benchmark, run by bench/bench.py (usage: bench/README.md, `--help`).

Modules, in the order a run uses them:
  cli            the command line (its docstring is the --help text) and the order of the runs
  checks         the runs, the targets, and the checks of the figures against them
  harness        the bench's state: databases, started servers, NATS streams, HTTP helpers, clean-up
  server         one started server (uvicorn, or Granian with --server granian)
  workload       the catalog, the subjects' consent histories, the decision questions
  seed           seeding over HTTP, warming the cache, the answer mix
  lua            the wrk Lua scripts
  wrk_runs       running wrk (warm-up, measured run, CPU meter, waiting for a quiet machine)
  baseline       the raw asyncpg write baseline
  default_runs   ceiling, decisions, latency, batch, writes, baseline
  lag            publish lag through NATS
  propagation    commit on one server to a changed decision on another
  scale          decisions over up to 1,000,000 subjects; scale_prepare loads and rebuilds its database
  cpu_meter      where the CPU went during a run
  machine        facts about the machine and its processes
  figures        progress lines, percentiles, number formatting
  report         the printed report
"""

import sys

try:
    import asyncpg  # noqa: F401
    import httpx  # noqa: F401
except ImportError as missing:  # pragma: no cover - a setup problem, said plainly
    sys.exit(f"bench needs asyncpg and httpx in this interpreter ({missing}); "
             f"install the project with its dev extras: pip install -e '.[dev]'")
