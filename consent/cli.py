"""The `consent` command: serve the API, migrate the database, rebuild read models, verify the log."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from consent.adapters import migrate
from consent.config import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="consent", description="Consent management service")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the HTTP API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--migrate", action="store_true", help="upgrade the database schema first")
    serve.add_argument("--workers", type=int, default=1)

    relay = commands.add_parser("relay", help="run only the outbox relay to NATS (one of several publishes)")
    relay.add_argument("--report", action="store_true",
                       help="write the relay's state as JSON lines on stdout and stop with the parent process "
                            "(how `consent serve` runs it with CONSENT_RELAY=process)")

    db = commands.add_parser("db", help="database schema migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="target revision (default: head / base)")

    projections = commands.add_parser("projections", help="read models")
    projections.add_argument("action", choices=["rebuild"], help="replay the whole log into fresh read tables")

    audit = commands.add_parser("audit", help="the tamper-evident log")
    audit.add_argument("action", choices=["verify"],
                       help="recompute every event's hash chain and the checkpoints; exit 1 at the first broken link")

    keys = commands.add_parser("keys", help="signing keys, and the master key of subjects' data keys")
    keys.add_argument("action", choices=["new-receipt-key", "rewrap"],
                      help="put a new receipt signing key first in FILE (created if missing); older keys stay "
                           "published so that receipts they signed still verify")
    keys.add_argument("file", metavar="FILE", nargs="?",
                      help="new-receipt-key: JWKS file of Ed25519 private keys (CONSENT_RECEIPT_KEYS)")
    keys.add_argument("--batch", type=int, default=500,
                      help="rewrap: wrap every subject's data key again with CONSENT_MASTER_KEY, this many keys "
                           "a transaction; events are not touched")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if args.command == "keys" and args.action == "new-receipt-key":
        if args.file is None:
            parser.error("keys new-receipt-key needs FILE")
        return _new_receipt_key(args.file)
    settings = Settings.from_env()
    if args.command == "keys":
        return asyncio.run(_rewrap(settings, args.batch))

    if args.command == "db":
        if args.action == "upgrade":
            migrate.upgrade(settings.database_url, args.revision or "head")
        else:
            migrate.downgrade(settings.database_url, args.revision or "base")
        return 0

    if args.command == "relay":
        from consent.adapters.relay_process import run_relay

        return asyncio.run(run_relay(settings, report=args.report))

    if args.command == "projections":
        return asyncio.run(_rebuild(settings))

    if args.command == "audit":
        return asyncio.run(_verify(settings))

    if args.migrate and not settings.embedded:
        migrate.upgrade(settings.database_url)
    import uvicorn

    uvicorn.run("consent.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level="info", loop="auto", http="auto")
    return 0


def _new_receipt_key(path: str) -> int:
    from pathlib import Path

    from consent.adapters.receipt_keys import ReceiptKeyError, add_new_key

    try:
        kid, kept = add_new_key(Path(path))
    except (ReceiptKeyError, OSError) as error:
        print(f"consent keys: {error}", file=sys.stderr)
        return 1
    print(f"receipt key {kid} now signs; {kept} older key(s) kept in {path} to verify earlier receipts. "
          "Restart every replica on this file.")
    return 0


async def _rewrap(settings: Settings, batch: int) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from consent.adapters.cipher import UnknownMasterKey
    from consent.adapters.database import Database
    from consent.adapters.key_rotation import count_outdated, rewrap_all
    from consent.adapters.master_key import master_keys

    master = master_keys(settings)
    if master is None:
        print("consent keys rewrap: CONSENT_MASTER_KEY is not set", file=sys.stderr)
        return 1
    database = Database(settings.database_url)
    try:
        columns = (TextColumn("rewrapping data keys"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as bar:
            task = bar.add_task("keys", total=await count_outdated(database, master))
            report = await rewrap_all(database, master, max(batch, 1), lambda n: bar.advance(task, n))
    except UnknownMasterKey as error:
        print(f"consent keys rewrap: {error}; add it to CONSENT_MASTER_KEYS_OLD. Nothing was changed.",
              file=sys.stderr)
        return 1
    finally:
        await database.dispose()
    print(f"{report.rewrapped} data keys rewrapped under master key {master.current_id} in {report.seconds:.1f} s; "
          f"{report.unreadable} did not unwrap; {report.remaining} not under it now")
    return 0 if report.unreadable == 0 else 1


async def _over_the_log(settings: Settings, label: str, walk):
    """Run `walk(database, progress)` over the whole log with a progress bar; its report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from consent.adapters.database import Database
    from consent.adapters.sql_store import head_position

    database = Database(settings.database_url)
    try:
        async with database.reading() as conn:
            total = await head_position(conn)
        with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()) as bar:
            task = bar.add_task("events", total=total)
            return await walk(database, lambda n: bar.advance(task, n))
    finally:
        await database.dispose()


async def _rebuild(settings: Settings) -> int:
    from consent.adapters.rebuild import rebuild_projections

    report = await _over_the_log(settings, "rebuilding read models", rebuild_projections)
    print(f"{report.events} events in {report.streams} streams replayed in {report.seconds:.1f} s "
          f"({report.events_per_second:,.0f} events/s); {report.caught_up_streams} streams caught up at the swap")
    return 0


async def _verify(settings: Settings) -> int:
    from consent.adapters.log_verify import verify_log

    report = await _over_the_log(settings, "verifying the log", verify_log)
    print(f"{report.events} events in {report.streams} streams and {report.checkpoints} checkpoints verified "
          f"in {report.seconds:.1f} s ({report.events_per_second:,.0f} events/s)")
    if report.broken is None:
        print("the log is intact")
        return 0
    broken = report.broken
    print(f"BROKEN at position {broken.position}"
          + (f", event {broken.event_id}, stream {broken.stream_id} version {broken.stream_version}"
             if broken.event_id is not None else "")
          + f": {broken.problem}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
