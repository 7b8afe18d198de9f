"""Work the service does by itself: expire grants that fall due, give notice of a partner's contract ending
(once, some days ahead), suspend partners whose contract ended, withdraw grants of terminated partners.

Every process runs it; the claims lock what they take (FOR UPDATE SKIP LOCKED on
PostgreSQL) and appends carry the expected version, so two processes never record
the same expiry twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from consent.app.background import BackgroundLoop
from consent.app.catalog_service import CatalogService
from consent.app.ports import RecordedEvent
from consent.app.subject_service import SubjectService
from consent.domain.events import PartnerTerminated

log = logging.getLogger("consent.scheduler")


class Scheduler(BackgroundLoop):
    task_name = "consent-scheduler"

    def __init__(self, catalogs: CatalogService, subjects: SubjectService, interval: float = 1.0,
                 contract_notice_days: int = 0) -> None:
        self._catalogs = catalogs
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
        return written

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
