"""How long a catalog plan takes to count whom a change affects, over many subjects.

    .venv/bin/python bench/catalog_impact.py [--subjects 1000000] [--postgres postgresql://...]

Creates a scratch database `consent_impact_<random>` (dropped at the end), migrates it, and fills the
`consents` read model directly (SQL, generate_series): per subject a first-party marketing grant (70 %,
one in ten of them withdrawn, one in ten expired), a grant to partner acme for profile and orders (50 %)
and one to globex for profile (20 %), all to version 1. Then it times, three times each, the two counts a
plan makes (consent/adapters/sql_impact.py): the subjects a material revision of marketing asks again,
and the subjects whose grants acme's narrower data uses (profile only) stop covering.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_database  # noqa: E402  (bench/, this script's folder)

from consent.adapters.sql_impact import SqlImpact  # noqa: E402

FILL = """
INSERT INTO consents (subject_id, purpose_id, partner_id, scopes, status, expires_at, purpose_version, updated_at)
SELECT 's-' || n, 'marketing', '', NULL,
       CASE WHEN n % 10 = 0 THEN 'withdrawn' ELSE 'granted' END,
       CASE WHEN n % 10 = 1 THEN now() - interval '1 day' END, 1, now()
FROM generate_series(1, $1) AS n WHERE n % 10 < 7
UNION ALL
SELECT 's-' || n, 'marketing', 'acme', '["orders", "profile"]'::jsonb, 'granted', NULL, 1, now()
FROM generate_series(1, $1) AS n WHERE n % 2 = 0
UNION ALL
SELECT 's-' || n, 'marketing', 'globex', '["profile"]'::jsonb, 'granted', NULL, 1, now()
FROM generate_series(1, $1) AS n WHERE n % 5 = 0
"""


async def run(args: argparse.Namespace) -> None:
    async with scratch_database(args.postgres, "consent_impact") as (dsn, database):
        raw = await asyncpg.connect(dsn)
        started = time.perf_counter()
        await raw.execute(FILL.replace("$1", str(args.subjects)))
        await raw.execute("VACUUM ANALYZE consents")
        rows = await raw.fetchval("SELECT count(*) FROM consents")
        await raw.close()
        print(f"{args.subjects:,} subjects, {rows:,} consent rows, filled in {time.perf_counter() - started:.1f} s")
        impact, now = SqlImpact(database), datetime.now(UTC)
        for label, count in (("material revision of marketing", lambda: impact.reconsent("marketing", 2, now)),
                             ("acme narrowed to profile", lambda: impact.narrowed("acme", {
                                 "marketing": ("profile",)}, now))):
            times, found = [], None
            for _ in range(3):
                started = time.perf_counter()
                found = await count()
                times.append(time.perf_counter() - started)
            print(f"{label}: {found.subjects:,} subjects {found.by_partner}; "
                  f"median {statistics.median(times):.3f} s (runs: {', '.join(f'{t:.3f}' for t in times)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subjects", type=int, default=1_000_000)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
