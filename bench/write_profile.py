"""Where a consent write's time goes in this process: cProfile of sequential writes through the use case.

    .venv/bin/python bench/write_profile.py [--writes 300] [--rounds 3] [--top 25] [--postgres postgresql://...]

Creates a scratch database `consent_profile_<random>` (dropped at the end), defines a purpose, writes once
to `--writes` subjects to warm connections and caches, then profiles `--rounds` more writes to each (later
writes: the write cache answers their reads) and prints the functions by own time, and the total call
count: the figure that compares two versions of the code without the noise of an HTTP run.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_database  # noqa: E402  (bench/, this script's folder)

from consent.adapters.memory_bus import InProcessBus  # noqa: E402
from consent.adapters.sql_unit_of_work import SqlUnitOfWork  # noqa: E402
from consent.app.catalog_service import CatalogService  # noqa: E402
from consent.app.ports import SystemClock  # noqa: E402
from consent.app.subject_service import SubjectService  # noqa: E402
from consent.app.writing import Publisher  # noqa: E402
from consent.domain import catalog as cat  # noqa: E402
from consent.domain.subject import Change  # noqa: E402

GRANT = [Change(purpose="marketing", action="grant")]


async def run(args: argparse.Namespace) -> None:
    async with scratch_database(args.postgres, "consent_profile") as (_, database):
        unit_of_work = functools.partial(SqlUnitOfWork, database)
        publisher, catalog = Publisher(InProcessBus()), cat.Catalog()
        catalogs = CatalogService(unit_of_work, publisher, SystemClock(), catalog)
        subjects = SubjectService(unit_of_work, publisher, SystemClock(), catalog)
        await catalogs.put_purpose("marketing", cat.PurposeSpec(
            title="Marketing", description="Offers", legal_basis="consent", retention="P30D"), False, "admin")
        subject_ids = [f"s-{n}" for n in range(args.writes)]
        for subject_id in subject_ids:
            await subjects.change_consents(subject_id, GRANT, "web", None, "subject")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.rounds):
            for subject_id in subject_ids:
                await subjects.change_consents(subject_id, GRANT, "web", None, "subject")
        profile.disable()
        stats = pstats.Stats(profile)
        print(f"{args.rounds * args.writes} writes: {stats.total_calls:,} function calls, "
              f"{stats.total_tt:.3f} s")
        stats.sort_stats("tottime").print_stats(args.top)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=300, help="subjects, one write each a round")
    parser.add_argument("--rounds", type=int, default=3, help="profiled rounds")
    parser.add_argument("--top", type=int, default=25, help="functions shown")
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
