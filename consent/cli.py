"""The `consent` command: serve the API, migrate the database."""

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

    db = commands.add_parser("db", help="database schema migrations")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="target revision (default: head / base)")

    projections = commands.add_parser("projections", help="read models")
    projections.add_argument("action", choices=["rebuild"], help="replay the whole log into fresh read tables")

    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()

    if args.command == "db":
        if args.action == "upgrade":
            migrate.upgrade(settings.database_url, args.revision or "head")
        else:
            migrate.downgrade(settings.database_url, args.revision or "base")
        return 0

    if args.command == "projections":
        return asyncio.run(_rebuild(settings))

    if args.migrate and not settings.embedded:
        migrate.upgrade(settings.database_url)
    import uvicorn

    uvicorn.run("consent.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level="info", loop="auto", http="auto")
    return 0


async def _rebuild(settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from consent.adapters.database import Database
    from consent.adapters.rebuild import rebuild_projections
    from consent.adapters.sql_store import head_position

    database = Database(settings.database_url)
    try:
        async with database.reading() as conn:
            total = await head_position(conn)
        columns = (TextColumn("rebuilding read models"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns) as bar:
            task = bar.add_task("events", total=total)
            report = await rebuild_projections(database, lambda n: bar.advance(task, n))
    finally:
        await database.dispose()
    print(f"{report.events} events in {report.streams} streams replayed in {report.seconds:.1f} s "
          f"({report.events_per_second:,.0f} events/s); {report.caught_up_streams} streams caught up at the swap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
