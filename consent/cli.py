"""The `consent` command: serve the API, migrate the database, rebuild read models, verify the log."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

from consent import cli_catalog, cli_keys
from consent.adapters import migrate
from consent.config import MIN_POOL_SIZE, SHARED_KEYS, Settings, SettingsError
from consent.config_fields import env_variable
from consent.logs import configure_logging, logging_config

SHARED = ", ".join(env_variable(name) for name in SHARED_KEYS)
# Commands that read an existing log: they need its database, migrated (never created by them).
NEEDS_MIGRATED = {("audit", "verify"), ("projections", "rebuild"), ("keys", "rewrap"), ("privacy-center-link", None)}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("consent")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _at_least(low: int):
    def whole(text: str) -> int:
        if not text.strip().isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {low}, not {text!r}")
        return int(text)
    return whole


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="consent", description="Consent management service.",
        epilog="Settings come from CONSENT_* environment variables (README, Configuration); a bad value stops "
               "a command with exit status 2 and a line naming the variable.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, needs: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=summary, description=f"{summary[0].upper()}{summary[1:]}. {needs}")

    serve = command("serve", "serve the HTTP API",
                    "Reads every CONSENT_* setting; on its own, the embedded default (SQLite file ./consent.db, "
                    f"migrated at start, in-process event bus). On PostgreSQL it needs {SHARED} "
                    "(`consent keys init` makes them) or CONSENT_ALLOW_EPHEMERAL_KEYS=1.")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=_at_least(1), default=8000, help="TCP port to listen on (default: %(default)s)")
    serve.add_argument("--migrate", action="store_true", help="upgrade the PostgreSQL schema first")
    serve.add_argument("--workers", type=_at_least(1), default=1,
                       help="worker processes; more than one needs CONSENT_DATABASE_URL on PostgreSQL and "
                            "CONSENT_NATS_URL (SQLite and the in-process bus are one process's) (default: %(default)s)")

    relay = command("relay", "run only the outbox relay to NATS (one of several publishes)",
                    "Needs CONSENT_DATABASE_URL (PostgreSQL, migrated) and CONSENT_NATS_URL; reads "
                    "CONSENT_NATS_STREAM, CONSENT_NATS_SUBJECT_PREFIX and CONSENT_EVENT_SOURCE.")
    relay.add_argument("--report", action="store_true",
                       help="write the relay's state as JSON lines on stdout and stop with the parent process "
                            "(how `consent serve` runs it with CONSENT_RELAY=process)")

    sender = command("webhook-sender", "run only webhook delivery (the log into the ledger, the ledger to partners)",
                     "Needs CONSENT_DATABASE_URL (PostgreSQL, migrated), CONSENT_MASTER_KEY (it opens the webhooks' "
                     "secrets) and CONSENT_PSEUDONYM_KEY (pairwise partners); reads CONSENT_WEBHOOK_*. Several may "
                     "run: one dispatches, all send.")
    sender.add_argument("--report", action="store_true",
                        help="write its state as JSON lines on stdout, read the master and pseudonym keys from stdin "
                             "and stop with the parent process (how `consent serve` runs it with "
                             "CONSENT_WEBHOOK_SENDER=process)")

    db = command("db", "database schema migrations", "Needs CONSENT_DATABASE_URL (default: ./consent.db).")
    db.add_argument("action", choices=["upgrade", "downgrade"])
    db.add_argument("revision", nargs="?", help="target revision (default: head / base)")

    projections = command("projections", "read models", "Needs CONSENT_DATABASE_URL, migrated (`consent db upgrade`).")
    projections.add_argument("action", choices=["rebuild"], help="replay the whole log into fresh read tables")

    audit = command("audit", "the tamper-evident log", "Needs CONSENT_DATABASE_URL, migrated (`consent db upgrade`).")
    audit.add_argument("action", choices=["verify"],
                       help="recompute every event's hash chain and the checkpoints; exit 1 at the first broken link")

    keys = command("keys", "secrets: a fresh set, receipt signing keys, the master key of subjects' data keys",
                   "init and new-receipt-key need no setting; rewrap needs CONSENT_DATABASE_URL (migrated), "
                   "CONSENT_MASTER_KEY and CONSENT_MASTER_KEYS_OLD.")
    actions = keys.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init",
        help=f"print a fresh set of secrets: CONSENT_ADMIN_KEYS, {SHARED}",
        description=f"Print a fresh set of secrets, CONSENT_ADMIN_KEYS, {SHARED}, for a .env file or a secret "
                    "store; every replica on one database needs the same. Needs no setting.")
    init.add_argument("--format", choices=["env", "json"], default="env",
                      help="env: NAME='value' lines (docker compose, systemd); json: one object "
                           "(default: %(default)s)")
    init.add_argument("--write", metavar="FILE",
                      help="write them to FILE (mode 0600) instead of printing them; an existing FILE is refused")
    rotate = actions.add_parser(
        "new-receipt-key", help="put a new receipt signing key first in a JWKS file",
        description="Put a new receipt signing key first in FILE (created if missing); older keys stay published "
                    "so that receipts they signed still verify. Needs no setting; point CONSENT_RECEIPT_KEYS at "
                    "FILE and restart every replica.")
    rotate.add_argument("file", metavar="FILE", help="JWKS file of Ed25519 private keys (CONSENT_RECEIPT_KEYS)")
    rewrap = actions.add_parser(
        "rewrap",
        help="wrap every subject's data key and seal every webhook secret again with CONSENT_MASTER_KEY",
        description="Wrap every subject's data key and seal every webhook's signing secret again with "
                    "CONSENT_MASTER_KEY, after the old one moved to CONSENT_MASTER_KEYS_OLD; events are not "
                    "touched, partners keep their secrets. Needs CONSENT_DATABASE_URL (migrated).")
    rewrap.add_argument("--batch", type=_at_least(1), default=500,
                        help="data keys, or webhooks, a transaction (default: %(default)s)")
    token = command("user-token", "print an end-user token for a subject (to try the end-user API)",
                    "Signs HS256 with CONSENT_USER_TOKEN_SECRET, as the platform's own login would.")
    token.add_argument("subject", metavar="SUBJECT", help="the subject id the token speaks for (its `sub`)")
    token.add_argument("--ttl", type=_at_least(1), default=3600, help="seconds until it expires (default: %(default)s)")
    cli_catalog.add_commands(commands)
    link = command("privacy-center-link", "print a single-use link to a subject's privacy center",
                   "Stores the link in the database, as POST /v1/subjects/{id}/privacy-center/sessions does; "
                   "valid for CONSENT_PRIVACY_CENTER_LINK_TTL seconds.")
    link.add_argument("subject", metavar="SUBJECT", help="the subject whose page the link opens")
    link.add_argument("--base", default=None,
                      help="the server's address (default: CONSENT_PUBLIC_URL, else http://127.0.0.1:8000)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()  # JSON lines unless on a terminal (CONSENT_LOG_FORMAT)
    if args.command == "keys" and args.action == "init":
        return cli_keys.init(args.format, args.write)
    if args.command == "keys" and args.action == "new-receipt-key":
        return cli_keys.new_receipt_key(args.file)
    if args.command == "catalog":  # a client of a running server: no setting of its own
        return cli_catalog.run(args)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        print(f"consent: {error}", file=sys.stderr)
        return 2
    if (args.command, getattr(args, "action", None)) in NEEDS_MIGRATED:
        problem = asyncio.run(migrate.schema_problem(settings.database_url))
        if problem is not None:
            words = " ".join(w for w in (args.command, getattr(args, "action", None)) if w)
            print(f"consent {words}: {problem}", file=sys.stderr)
            return 1

    if args.command == "keys":
        return asyncio.run(cli_keys.rewrap(settings, args.batch))

    if args.command == "user-token":
        return _user_token(settings, args.subject, args.ttl)

    if args.command == "privacy-center-link":
        return asyncio.run(_privacy_center_link(settings, args.subject, args.base))

    if args.command == "db":
        if args.action == "upgrade":
            migrate.upgrade(settings.database_url, args.revision or "head")
        else:
            migrate.downgrade(settings.database_url, args.revision or "base")
        return 0

    if args.command == "relay":
        from consent.adapters.relay_process import run_relay

        return _run_loop(run_relay(settings, report=args.report))

    if args.command == "webhook-sender":
        from consent.adapters.webhook_process import run_webhook_sender

        return _run_loop(run_webhook_sender(settings, report=args.report))

    if args.command == "projections":
        return asyncio.run(_rebuild(settings))

    if args.command == "audit":
        return asyncio.run(_verify(settings))
    return _serve(settings, args)


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    """A long-running command on uvloop where it is installed (with uvicorn's standard extras), as the server
    runs: the relay and the webhook senders spend their time in the event loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from consent.adapters.receipt_keys import ReceiptKeys, is_inline

    if args.workers > 1 and (settings.embedded or settings.nats_url is None):
        # Each worker would migrate the SQLite file at once, and keep its own catalog and cache: writes to one
        # would never reach the others without the NATS feed.
        print("consent serve: --workers above 1 needs CONSENT_DATABASE_URL on PostgreSQL and CONSENT_NATS_URL "
              "(the embedded SQLite default and its in-process bus serve one process)", file=sys.stderr)
        return 2
    try:
        settings.require_shared_keys()
        if settings.receipt_keys is not None and not is_inline(settings.receipt_keys):
            ReceiptKeys.from_file(settings.receipt_keys)  # refused here rather than by every worker
    except ValueError as error:  # SettingsError, ReceiptKeyError
        print(f"consent serve: {error}", file=sys.stderr)
        return 2
    if args.workers > 1:
        # The budget is the replica's: its workers share it (each reads its settings from the environment).
        share = settings.database_pool_size // args.workers
        if share < MIN_POOL_SIZE:
            print(f"consent serve: CONSENT_DATABASE_POOL_SIZE={settings.database_pool_size} leaves each of "
                  f"{args.workers} workers fewer than {MIN_POOL_SIZE} connections", file=sys.stderr)
            return 2
        os.environ["CONSENT_DATABASE_POOL_SIZE"] = str(share)
    if args.migrate and not settings.embedded:
        migrate.upgrade(settings.database_url)
    import uvicorn

    uvicorn.run("consent.api.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, access_log=False, log_level="info", loop="auto", http="auto",
                log_config=logging_config(settings.log_format))  # uvicorn's lines in the same format
    return 0


def _user_token(settings: Settings, subject: str, ttl: int) -> int:
    import time

    import jwt

    if settings.user_token_secret is None:
        print("consent user-token: CONSENT_USER_TOKEN_SECRET is not set (the server needs the same one)",
              file=sys.stderr)
        return 1
    now = int(time.time())
    print(jwt.encode({"sub": subject, "iat": now, "exp": now + ttl}, settings.user_token_secret, algorithm="HS256"))
    return 0


async def _privacy_center_link(settings: Settings, subject: str, base: str | None) -> int:
    from consent.adapters.database import Database
    from consent.adapters.sql_privacy_center import SqlSessionStore
    from consent.app.ports import SystemClock
    from consent.app.privacy_center import PrivacyCenterSessions
    from consent.domain.errors import DomainError
    from consent.domain.ids import check_subject

    try:
        check_subject(subject)
    except DomainError as error:
        print(f"consent privacy-center-link: {error.detail}", file=sys.stderr)
        return 2
    database = Database(settings.database_url)
    try:
        sessions = PrivacyCenterSessions(SqlSessionStore(database), SystemClock(), settings.privacy_center_link_ttl,
                                         settings.privacy_center_session_ttl)
        link = await sessions.new_link(subject)
    finally:
        await database.dispose()
    print(f"{(base or settings.public_url or 'http://127.0.0.1:8000').rstrip('/')}/privacy-center/enter/{link.code}")
    return 0


async def _over_the_log(settings: Settings, label: str, walk):
    """Run `walk(database, progress)` over the whole log with a progress bar; its report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from consent.adapters.database import Database
    from consent.adapters.sql_reads import head_position

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
