"""`consent keys rewrap`: every data key wrapped again by the current master key, and every webhook's signing
secret sealed again by it; events untouched.

Rotation: make the new key CONSENT_MASTER_KEY, move the old one to CONSENT_MASTER_KEYS_OLD, restart
the replicas (they read both, and wrap new data keys with the new one), run this, then drop the old
key. Batches of keys are rewrapped a transaction each, so writers are held up briefly at most; an
update only lands if the row still holds the key it read, so a subject erased (or given a new key)
meanwhile is left as it is: a deleted key is never brought back. Likewise a webhook's secrets (the
current one and, during a rotation's overlap, the previous one) are sealed again only if the row still holds
the secret read: one rotated or deleted meanwhile is left as it is.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import sqlalchemy as sa
from msgspec import Struct

from consent.adapters.cipher import CipherError, MasterKeys, UnknownMasterKey
from consent.adapters.database import Database
from consent.adapters.tables import subject_keys, webhooks
from consent.app.webhooks import previous_context

BATCH = 500

_UPDATE = (sa.update(subject_keys)
           .where(subject_keys.c.subject_id == sa.bindparam("b_subject"),
                  subject_keys.c.key_id == sa.bindparam("b_key"),
                  subject_keys.c.master_key_id == sa.bindparam("b_old"))
           .values(wrapped_key=sa.bindparam("b_wrapped"), master_key_id=sa.bindparam("b_new")))
_RESEAL = (sa.update(webhooks)
           .where(webhooks.c.id == sa.bindparam("b_id"), webhooks.c.secret == sa.bindparam("b_sealed"),
                  webhooks.c.master_key_id == sa.bindparam("b_old"))
           .values(secret=sa.bindparam("b_secret"), previous_secret=sa.bindparam("b_previous"),
                   master_key_id=sa.bindparam("b_new")))


class RewrapReport(Struct):
    rewrapped: int
    resealed: int  # webhooks whose secrets were sealed again
    unreadable: int  # data keys or webhook secrets that did not open (damaged rows): left as they are
    remaining: int  # keys and webhooks not under the current master key afterwards (unreadable ones, or meanwhile)
    seconds: float


async def rewrap_all(database: Database, master: MasterKeys, batch: int = BATCH,
                     progress: Callable[[int], None] | None = None) -> RewrapReport:
    """Raises UnknownMasterKey, before changing anything, if a key or a webhook's secret is under a master key
    not configured."""
    started = time.perf_counter()
    outdated = subject_keys.c.master_key_id != master.current_id
    async with database.reading() as conn:
        in_use = set((await conn.execute(sa.select(subject_keys.c.master_key_id).distinct())).scalars())
        in_use |= set((await conn.execute(sa.select(webhooks.c.master_key_id).distinct())).scalars())
    for master_key_id in sorted(in_use - master.ids):
        raise UnknownMasterKey(master_key_id)
    rewrapped = unreadable = 0
    after = ""
    while True:
        async with database.writing() as conn:
            rows = (await conn.execute(
                sa.select(subject_keys.c.subject_id, subject_keys.c.key_id, subject_keys.c.wrapped_key,
                          subject_keys.c.master_key_id)
                .where(outdated, subject_keys.c.subject_id > after)
                .order_by(subject_keys.c.subject_id).limit(batch))).all()
            updates = []
            for row in rows:
                try:
                    key = master.unwrap(row.subject_id, row.key_id, row.wrapped_key, row.master_key_id)
                except CipherError:
                    unreadable += 1
                    continue
                updates.append({"b_subject": row.subject_id, "b_key": row.key_id, "b_old": row.master_key_id,
                                "b_wrapped": master.wrap(row.subject_id, key), "b_new": master.current_id})
            if updates:
                await conn.execute(_UPDATE, updates)
        if not rows:
            break
        rewrapped += len(updates)
        after = rows[-1].subject_id
        if progress is not None:
            progress(len(rows))
    resealed, unopened = await reseal_webhook_secrets(database, master, batch, progress)
    return RewrapReport(rewrapped=rewrapped, resealed=resealed, unreadable=unreadable + unopened,
                        remaining=await count_outdated(database, master), seconds=time.perf_counter() - started)


async def reseal_webhook_secrets(database: Database, master: MasterKeys, batch: int = BATCH,
                                 progress: Callable[[int], None] | None = None) -> tuple[int, int]:
    """(webhooks resealed, webhooks whose secrets did not open). Each secret keeps the context it was sealed
    with, so the sender opens it as before, and the partner's `whsec_` secret stays the same."""
    resealed = unopened = 0
    after = ""
    while True:
        async with database.writing() as conn:
            rows = (await conn.execute(
                sa.select(webhooks.c.id, webhooks.c.secret, webhooks.c.previous_secret, webhooks.c.master_key_id)
                .where(webhooks.c.master_key_id != master.current_id, webhooks.c.id > after)
                .order_by(webhooks.c.id).limit(batch))).all()
            updates = []
            for row in rows:
                try:
                    secret = master.open(row.id.encode(), row.secret, row.master_key_id)
                    previous = (None if row.previous_secret is None else
                                master.open(previous_context(row.id), row.previous_secret, row.master_key_id))
                except CipherError:
                    unopened += 1
                    continue
                updates.append({
                    "b_id": row.id, "b_sealed": row.secret, "b_old": row.master_key_id,
                    "b_secret": master.seal(row.id.encode(), secret), "b_new": master.current_id,
                    "b_previous": None if previous is None else master.seal(previous_context(row.id), previous)})
            if updates:
                await conn.execute(_RESEAL, updates)
        if not rows:
            return resealed, unopened
        resealed += len(updates)
        after = rows[-1].id
        if progress is not None:
            progress(len(rows))


async def count_outdated(database: Database, master: MasterKeys) -> int:
    """Data keys and webhooks not under the current master key."""
    async with database.reading() as conn:
        keys = (await conn.execute(sa.select(sa.func.count()).select_from(subject_keys)
                                   .where(subject_keys.c.master_key_id != master.current_id))).scalar_one()
        hooks = (await conn.execute(sa.select(sa.func.count()).select_from(webhooks)
                                    .where(webhooks.c.master_key_id != master.current_id))).scalar_one()
    return keys + hooks
