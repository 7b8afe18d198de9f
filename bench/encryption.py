"""What encrypting evidence costs a consent write: the service on PostgreSQL, with and without the cipher.

    .venv/bin/python bench/encryption.py [--writes 2000] [--rounds 6] [--postgres postgresql://...]

Creates a scratch database `consent_bench_keys_<random>` (dropped at the end), and drives
`SubjectService.change_consents` directly (no HTTP: the smallest denominator, so the largest
percentage), one write at a time, each a grant carrying evidence:

- `encrypted`: the service as it is (the key row read with the state, evidence sealed with
  AES-256-GCM before the row is hashed, unwrapped keys cached);
- `plaintext`: the cipher short-circuited, in this script only: no key is read, made or used,
  and evidence is stored in clear, as before crypto-shredding.

Two scenarios, each variant alternating with the other `--rounds` times (medians reported, and the
median of each round's paired ratio, which the machine's drift disturbs less):
`first write` (a new subject every write: its data key is made, wrapped and inserted by one more
CTE of the same statement) and `later write` (subjects that already have a key: cached, seal only).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import msgspec
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch import scratch_database  # noqa: E402  (bench/, this script's folder)

from consent.adapters import sql_recorder, subject_repository  # noqa: E402
from consent.adapters.cipher import MasterKeys, new_data_key  # noqa: E402
from consent.adapters.memory_bus import InProcessBus  # noqa: E402
from consent.adapters.sql_reads import SUBJECT_STATE  # noqa: E402
from consent.adapters.sql_unit_of_work import SqlUnitOfWork  # noqa: E402
from consent.adapters.subject_keys import SubjectKeys, sealer  # noqa: E402
from consent.adapters.tables import events, subjects  # noqa: E402
from consent.app.catalog_service import CatalogService  # noqa: E402
from consent.app.ports import SystemClock  # noqa: E402
from consent.app.subject_service import SubjectService  # noqa: E402
from consent.app.writing import Publisher  # noqa: E402
from consent.domain import catalog as cat  # noqa: E402
from consent.domain.events import Evidence  # noqa: E402
from consent.domain.subject import Change  # noqa: E402

EVIDENCE = Evidence(collection_point="privacy-center", text_shown="May we send you offers by email?",
                    user_note="please only monthly", ip_address="203.0.113.7",
                    user_agent="Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/128.0")
GRANT = [Change(purpose="marketing", action="grant", scopes=("profile",))]

# The write-path read as it was before crypto-shredding: the same columns, no join on subject_keys.
_PLAIN_SUBJECT_FOR_WRITE = (
    SUBJECT_STATE.add_columns(events.c.hash.label("head_hash"))
    .outerjoin(events, sa.and_(events.c.stream_id == sa.literal("subject:") + subjects.c.subject_id,
                               events.c.stream_version == subjects.c.version))
    .where(subjects.c.subject_id == sa.bindparam("subject_id"))
    .add_columns(sa.null().label("key_id"), sa.null().label("wrapped_key"), sa.null().label("master_key_id"))
)


@contextlib.contextmanager
def cipher_short_circuited() -> Iterator[None]:
    saved = subject_repository.has_personal_data, sql_recorder._SUBJECT_FOR_WRITE
    subject_repository.has_personal_data = lambda _events: False
    sql_recorder._SUBJECT_FOR_WRITE = _PLAIN_SUBJECT_FOR_WRITE
    try:
        yield
    finally:
        subject_repository.has_personal_data, sql_recorder._SUBJECT_FOR_WRITE = saved


async def timed_writes(service: SubjectService, subject_ids: list[str]) -> tuple[float, float]:
    """(wall, this process's CPU) µs per write, sequential."""
    started, cpu = time.perf_counter(), time.process_time()
    for subject_id in subject_ids:
        await service.change_consents(subject_id, GRANT, "web", EVIDENCE, "subject")
    return ((time.perf_counter() - started) / len(subject_ids) * 1e6,
            (time.process_time() - cpu) / len(subject_ids) * 1e6)


async def run(args: argparse.Namespace) -> None:
    async with scratch_database(args.postgres, "consent_bench_keys") as (_, database):
        keys = SubjectKeys(MasterKeys(os.urandom(32)))
        unit_of_work = functools.partial(SqlUnitOfWork, database, keys=keys)
        publisher, catalog = Publisher(InProcessBus()), cat.Catalog()
        catalogs = CatalogService(unit_of_work, publisher, SystemClock(), catalog)
        service = SubjectService(unit_of_work, publisher, SystemClock(), catalog)
        await catalogs.put_scope("profile", cat.ScopeSpec(title="Profile", description="", sensitivity="low"), "admin")
        await catalogs.put_purpose("marketing", cat.PurposeSpec(
            title="Marketing", description="Offers", legal_basis="consent", retention="P30D"), False, "admin")
        await timed_writes(service, [f"warm-{n}" for n in range(200)])  # connections, caches, statements

        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for round_ in range(args.rounds):
            for variant in ("encrypted", "plaintext") if round_ % 2 == 0 else ("plaintext", "encrypted"):
                ids = [f"{variant}-{round_}-{n}" for n in range(args.writes)]
                with cipher_short_circuited() if variant == "plaintext" else contextlib.nullcontext():
                    first = await timed_writes(service, ids)
                    later = await timed_writes(service, ids)
                results.setdefault(("first write", variant), []).append(first)
                results.setdefault(("later write", variant), []).append(later)
                print(f"round {round_ + 1} {variant:9}: first {first[0]:5.0f} µs (CPU {first[1]:4.0f}), "
                      f"later {later[0]:5.0f} µs (CPU {later[1]:4.0f})", flush=True)

        async with database.reading() as conn:  # each variant did what it says
            for variant, expected in (("encrypted", True), ("plaintext", False)):
                sealed = (await conn.execute(sa.text(
                    "SELECT bool_and(data->'evidence' ? 'enc') FROM events WHERE stream_id LIKE :like"),
                    {"like": f"subject:{variant}-%"})).scalar_one()
                assert sealed is expected, f"{variant}: evidence sealed = {sealed}"

        seal = sealer(new_data_key())
        data = {"evidence": msgspec.to_builtins(EVIDENCE)}
        started, count = time.perf_counter(), 20_000
        for _ in range(count):
            seal(data, "subject:someone", uuid.uuid4())
        seal_us = (time.perf_counter() - started) / count * 1e6

        print(f"\n{args.writes:,} sequential writes a run, {args.rounds} runs a variant, medians; "
              f"sealing alone {seal_us:.1f} µs an event")
        print("| scenario | plaintext µs/write | encrypted µs/write | overhead of medians | median of paired "
              "overheads (min, max) | client CPU µs/write, plaintext → encrypted |")
        print("|---|---|---|---|---|---|")
        for scenario in ("first write", "later write"):
            plain = [w for w, _ in results[(scenario, "plaintext")]]
            sealed = [w for w, _ in results[(scenario, "encrypted")]]
            # Each round ran both variants back to back: their ratio is less exposed to the machine's drift.
            paired = [(e / p - 1) * 100 for e, p in zip(sealed, plain, strict=True)]
            cpu = [statistics.median(c for _, c in results[(scenario, v)]) for v in ("plaintext", "encrypted")]
            print(f"| {scenario} | {statistics.median(plain):,.0f} | {statistics.median(sealed):,.0f} | "
                  f"{(statistics.median(sealed) / statistics.median(plain) - 1) * 100:+.1f} % | "
                  f"{statistics.median(paired):+.1f} % ({min(paired):+.1f}, {max(paired):+.1f}) | "
                  f"{cpu[0]:,.0f} → {cpu[1]:,.0f} ({(cpu[1] / cpu[0] - 1) * 100:+.1f} %) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
