"""Work the service does by itself: expire grants that fall due, give notice of a partner's contract ending
(once, some days ahead), suspend partners whose contract ended, withdraw grants of terminated partners; and,
now and then, delete webhook deliveries delivered long ago (the ledger would otherwise only grow).

Every process runs it; the claims lock what they take (FOR UPDATE SKIP LOCKED on
PostgreSQL) and appends carry the expected version, so two processes never record
the same expiry twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from consent.app.background import BackgroundLoop
from consent.app.catalog_service import CatalogService
from consent.app.ports import Clock, RecordedEvent
from consent.app.subject_service import SubjectService
from consent.domain.events import PartnerTerminated

log = logging.getLogger("consent.scheduler")

PRUNE_EVERY = timedelta(minutes=10)  # the prune walks every old delivered row: not on every one-second sweep


class DeliveredLedger(Protocol):
    """consent/adapters/webhook_ledger.py, DeliveryLedger."""

    async def prune_delivered(self, before: datetime) -> int: ...


class LedgerRetention(NamedTuple):
    ledger: DeliveredLedger
    clock: Clock
    days: int  # CONSENT_WEBHOOK_LEDGER_DAYS


class Scheduler(BackgroundLoop):
    task_name = "consent-scheduler"

    def __init__(self, catalogs: CatalogService, subjects: SubjectService, interval: float = 1.0,
                 contract_notice_days: int = 0, retention: LedgerRetention | None = None) -> None:
        self._catalogs = catalogs
        self._retention = retention  # None: the ledger is not pruned here
        self._pruned_at: datetime | None = None
        self._contract_notice_days = contract_notice_days  # 0: no `partner.contract_ending` notices
        self._subjects = subjects
        self._interval = interval
        self._wake = asyncio.Event()

    async def sweep_once(self) -> int:
        """The events written that change state (a notice of a contract's end changes none: not counted)."""
        if self._contract_notice_days > 0:
            await self._catalogs.notify_contracts_ending(self._contract_notice_days)
        written = await self._catalogs.suspend_partners_past_contract()
        while (batch := await self._subjects.expire_due_grants()) > 0:
            written += batch
        while (batch := await self._subjects.withdraw_grants_of_terminated_partners()) > 0:
            written += batch
        await self._prune_ledger()  # last: a failure here holds up none of the above
        return written

    async def _prune_ledger(self) -> None:
        if self._retention is None:
            return
        now = self._retention.clock.now()
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = now  # before the prune: one that fails waits for the next round, not the next sweep
        pruned = await self._retention.ledger.prune_delivered(now - timedelta(days=self._retention.days))
        if pruned:
            log.info("%d delivered webhook deliveries pruned from the ledger", pruned)

    async def on_events(self, events: list[RecordedEvent]) -> None:
        if any(isinstance(item.event, PartnerTerminated) for item in events):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.sweep_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the next sweep tries again
                log.warning("scheduler sweep failed (%s)", type(error).__name__)
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
