"""`consent keys`: a fresh set of secrets, a new receipt signing key, data keys and webhook secrets wrapped
again."""

from __future__ import annotations

import json
import os
import secrets
import sys
from datetime import UTC, datetime
from pathlib import Path

from consent.adapters.cipher import new_master_key
from consent.adapters.receipt_keys import new_key_set
from consent.config import Settings
from consent.domain.pseudonyms import MIN_KEY_LENGTH


def fresh_secrets() -> dict[str, str]:
    """One of each secret the service reads, newly made: what every replica on one database must share."""
    return {
        "CONSENT_ADMIN_KEYS": secrets.token_urlsafe(32),
        "CONSENT_MASTER_KEY": new_master_key(),
        "CONSENT_TOKEN_SIGNING_KEY": secrets.token_urlsafe(32),
        "CONSENT_PSEUDONYM_KEY": secrets.token_urlsafe(MIN_KEY_LENGTH),  # 43 characters
        "CONSENT_RECEIPT_KEYS": new_key_set(),  # the JWKS itself, on one line
    }


def as_env_file(values: dict[str, str]) -> str:
    """A .env file (docker compose, systemd, `set -a; . ./.env`): single quotes keep the JWKS's braces and
    double quotes as they are. None of the values holds a single quote."""
    made = datetime.now(UTC).strftime("%Y-%m-%d")
    lines = [f"# Secrets of the consent service, made by `consent keys init` on {made}. Keep this file",
             "# secret (mode 0600, out of version control) and give every replica the same values. Back up",
             "# CONSENT_MASTER_KEY with the database: without it the evidence cannot be read."]
    lines += [f"{name}='{value}'" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def init(output_format: str, write_to: str | None) -> int:
    values = fresh_secrets()
    text = as_env_file(values) if output_format == "env" else json.dumps(values, indent=2) + "\n"
    if write_to is None:
        sys.stdout.write(text)
        return 0
    try:
        # Created here or not at all: an existing file may hold keys in use (its master key reads the evidence).
        descriptor = os.open(write_to, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"consent keys init: {write_to} exists; not overwritten (its keys may be in use)", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"consent keys init: cannot create {write_to} ({error.strerror})", file=sys.stderr)
        return 1
    with os.fdopen(descriptor, "w") as out:
        out.write(text)
    print(f"{len(values)} secrets written to {write_to} (mode 0600)")
    return 0


def new_receipt_key(path: str) -> int:
    from consent.adapters.receipt_keys import ReceiptKeyError, add_new_key

    try:
        kid, kept = add_new_key(Path(path))
    except (ReceiptKeyError, OSError) as error:
        print(f"consent keys: {error}", file=sys.stderr)
        return 1
    print(f"receipt key {kid} now signs; {kept} older key(s) kept in {path} to verify earlier receipts. "
          "Restart every replica on this file.")
    return 0


async def rewrap(settings: Settings, batch: int) -> int:
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
        columns = (TextColumn("rewrapping data keys and webhook secrets"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns) as bar:
            task = bar.add_task("keys", total=await count_outdated(database, master))
            report = await rewrap_all(database, master, max(batch, 1), lambda n: bar.advance(task, n))
    except UnknownMasterKey as error:
        print(f"consent keys rewrap: {error}; add it to CONSENT_MASTER_KEYS_OLD. Nothing was changed.",
              file=sys.stderr)
        return 1
    finally:
        await database.dispose()
    print(f"{report.rewrapped} data keys rewrapped and {report.resealed} webhook secrets resealed under master key "
          f"{master.current_id} in {report.seconds:.1f} s; {report.unreadable} did not open; "
          f"{report.remaining} not under it now")
    return 0 if report.unreadable == 0 else 1
