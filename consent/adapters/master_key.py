"""Which master key wraps subjects' data keys, from the settings.

- `CONSENT_MASTER_KEY` set: that key; `CONSENT_MASTER_KEYS_OLD` adds keys that are only read.
- Unset on the embedded SQLite default: a key generated once into a file beside the database
  (`<database>.master-key`, mode 0600) and reused, with a warning: a newcomer's evidence is still
  encrypted, and the file must be kept (and backed up) with the database. An in-memory database
  gets a key for the life of the process.
- Unset on PostgreSQL: none. The service runs (decisions and changes without evidence need no key)
  and refuses changes that carry evidence with 422 `master_key_missing`: production must not store
  personal data under a key that nobody configured, and so nobody backs up or rotates.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import sqlalchemy as sa

from consent.adapters.cipher import KEY_SIZE, MasterKeys, new_master_key
from consent.config import Settings
from consent.domain.key_encoding import decode_master_key

log = logging.getLogger("consent.keys")

KEY_FILE_SUFFIX = ".master-key"


def master_keys(settings: Settings) -> MasterKeys | None:
    old = [decode_master_key(key, "CONSENT_MASTER_KEYS_OLD") for key in settings.master_keys_old]
    if settings.master_key is not None:
        return MasterKeys(decode_master_key(settings.master_key, "CONSENT_MASTER_KEY"), old)
    if not settings.embedded:
        log.warning("CONSENT_MASTER_KEY is not set: consent changes carrying evidence will be refused")
        return None
    path = key_file(settings.database_url)
    if path is None:
        return MasterKeys(os.urandom(KEY_SIZE), old)  # in memory: nothing outlives the process anyway
    log.warning("CONSENT_MASTER_KEY is not set: evidence is encrypted under the key in %s; keep that file "
                "with the database (losing it loses the evidence), or set CONSENT_MASTER_KEY", path)
    return MasterKeys(_read_or_create(path), old)


def key_file(database_url: str) -> Path | None:
    database = sa.make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        return None
    return Path(database).with_name(Path(database).name + KEY_FILE_SUFFIX)


def _read_or_create(path: Path) -> bytes:
    if not path.exists():
        # Written whole under a name of its own, then linked into place: when two workers start at
        # once, one link wins and both read the same complete key.
        draft = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(new_master_key() + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(draft, path)
        finally:
            draft.unlink(missing_ok=True)
    return decode_master_key(path.read_text(), str(path))
