"""Webhook senders: every process claims due deliveries from the ledger (consent/adapters/webhook_ledger.py) and
POSTs them, signed as Standard Webhooks prescribes: `webhook-id` (the event id, the same on every attempt),
`webhook-timestamp`, and `webhook-signature`: `v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>`,
once per secret while a rotated one still signs. The body is the CloudEvent as published on NATS.

- 2xx: delivered. 410 Gone: the webhook is disabled (its deliveries wait for it to be enabled again).
- 5xx, 429 (Retry-After honoured), a timeout (10 s for the whole exchange), a connection error, or an address
  refused at delivery: tried again after the next delay of CONSENT_WEBHOOK_RETRY_SCHEDULE, with jitter;
  once the schedule is spent the delivery is `dead`. Any other answer (a redirect is never followed): `dead`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from consent.adapters.cipher import CipherError, MasterKeys, UnknownMasterKey
from consent.adapters.url_guard import UrlGuard
from consent.adapters.webhook_http import DeliveryError, WebhookHttp
from consent.adapters.webhook_ledger import DeliveryLedger
from consent.app.background import BackgroundLoop
from consent.config import Settings
from consent.domain.errors import DomainError

log = logging.getLogger("consent.webhooks")

TIMEOUT = 10.0  # seconds for a whole attempt: connect, send, answer
# A claimed delivery is left to other replicas only after this: three attempts' time, so that a live sender
# has settled it long before, and a killed one holds it back no longer than needed.
LEASE = timedelta(seconds=3 * TIMEOUT)
IN_FLIGHT = 64  # attempts running at once in one process
IDLE_CHECK = 1.0  # seconds between looks at the ledger without a wake-up (retries fall due; other replicas)
LONGEST_RETRY_AFTER = 86_400.0
USER_AGENT = "consent-webhooks/1"

Disable = Callable[[str, str], Awaitable[None]]  # (partner id, webhook id): after a 410


def signature_header(secrets: list[bytes], message_id: str, timestamp: str, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return " ".join("v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
                    for key in secrets)


def next_delay(schedule: tuple[float, ...], attempts_made: int, retry_after: float | None) -> float | None:
    """Seconds before the next attempt, with ±20 % jitter so that retries of many deliveries spread out;
    None when the schedule is spent."""
    if attempts_made > len(schedule):
        return None
    delay = schedule[attempts_made - 1] * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret
    return max(delay, min(retry_after, LONGEST_RETRY_AFTER)) if retry_after is not None else delay


def retry_after_seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the schedule's delay stands


def sender_of(settings: Settings, ledger: DeliveryLedger, keys: MasterKeys | None, disable: Disable) -> WebhookSender:
    guard = UrlGuard(settings.webhook_allow_http, settings.webhook_allowed_hosts)
    schedule = tuple(float(delay) for delay in settings.webhook_retry_schedule)
    return WebhookSender(ledger, keys, guard, schedule, disable)


class WebhookSender(BackgroundLoop):
    task_name = "consent-webhook-sender"

    def __init__(self, ledger: DeliveryLedger, keys: MasterKeys | None, guard: UrlGuard,
                 schedule: tuple[float, ...], disable: Disable) -> None:
        self._ledger = ledger
        self._keys = keys
        self._guard = guard
        self._schedule = schedule
        self._disable = disable
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._client: WebhookHttp | None = None
        # Outcomes of finished attempts, written together: one statement for all that finished meanwhile.
        self._outcomes: list[dict[str, Any]] = []
        self._outcome_ready = asyncio.Event()
        self._settler: asyncio.Task | None = None
        self.attempts: dict[str, int] = {}  # attempts made by this process, by the delivery's status after them

    def wake(self) -> None:
        self._wake.set()

    @property
    def in_flight(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        await super().start()
        self._settler = asyncio.create_task(self._settle_loop(), name="consent-webhook-settler")

    async def stop(self) -> None:
        await super().stop()
        for task in [*self._running, *([self._settler] if self._settler else [])]:
            task.cancel()
        await asyncio.gather(*self._running, *([self._settler] if self._settler else []), return_exceptions=True)
        if self._outcomes:  # what finished is recorded; what was cut off is claimed again once its lease ends
            try:
                await self._ledger.settle(self._outcomes)
            except Exception as error:  # noqa: BLE001 - shutting down: those are attempted again
                log.warning("webhook outcomes not recorded at shutdown (%s)", type(error).__name__)
        if self._client is not None:
            await self._client.aclose()

    async def _settle_loop(self) -> None:
        while True:
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            outcomes, self._outcomes = self._outcomes, []
            try:
                await self._ledger.settle(outcomes)
            except asyncio.CancelledError:
                self._outcomes[:0] = outcomes
                raise
            except Exception as error:  # noqa: BLE001 - the leases run out and those are attempted again
                log.warning("webhook outcomes not recorded (%s)", type(error).__name__)
            self._wake.set()  # the next delivery of the same subject may be due now

    async def _run(self) -> None:
        self._client = WebhookHttp(keep_per_destination=IN_FLIGHT)
        while True:
            self._wake.clear()
            try:
                free = IN_FLIGHT - len(self._running)
                claimed = await self._claim(free) if free > 0 else []
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - the next look tries again
                log.warning("webhook claim failed (%s)", type(error).__name__)
                claimed = []
            for delivery in claimed:
                task = asyncio.create_task(self._deliver(delivery))
                self._running.add(task)
                task.add_done_callback(self._finished)
            if claimed and len(claimed) == free:
                continue
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=IDLE_CHECK)
            except TimeoutError:
                pass

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)

    async def _claim(self, limit: int) -> list[Any]:
        now = datetime.now(UTC)
        return await self._ledger.claim(now, limit, now + LEASE)

    async def _deliver(self, delivery: Any) -> None:
        try:
            at = datetime.now(UTC)
            started = time.monotonic()
            status, error, retry_after = await self._attempt(delivery)
            attempt: dict[str, Any] = {"at": at.isoformat(), "duration_ms": round((time.monotonic() - started) * 1000)}
            attempt.update({"status": status} if status is not None else {"error": error})
            attempts = [*delivery.attempts, attempt]
            if status is not None and 200 <= status < 300:
                self._record(delivery.id, "delivered", attempts, None)
            elif status == 410:
                # Disabled before the outcome is settled: settled first, the delivery would be due at once and
                # claimed again while its webhook was still enabled.
                await self._disable(delivery.partner_id, delivery.webhook_id)
                self._record(delivery.id, "failed", attempts, datetime.now(UTC))
            else:
                retriable = status is None or status >= 500 or status == 429
                delay = next_delay(self._schedule, len(attempts), retry_after) if retriable else None
                later = datetime.now(UTC) + timedelta(seconds=delay) if delay is not None else None
                self._record(delivery.id, "dead" if delay is None else "failed", attempts, later)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - the lease runs out and the delivery is claimed again
            log.warning("webhook delivery %s not settled (%s)", delivery.id, type(error).__name__)

    def _record(self, delivery_id: int, status: str, attempts: list[dict], next_attempt_at: datetime | None) -> None:
        self.attempts[status] = self.attempts.get(status, 0) + 1
        self._outcomes.append({"delivery_id": delivery_id, "status": status, "attempts": attempts,
                               "next_attempt_at": next_attempt_at})
        self._outcome_ready.set()

    async def _attempt(self, delivery: Any) -> tuple[int | None, str | None, float | None]:
        """(HTTP status, or None and the kind of error, and Retry-After seconds of a 429)."""
        try:
            destination = await self._guard.destination(delivery.url)
            secrets = self._secrets(delivery)
        except DomainError:
            return None, "url_forbidden", None
        except (CipherError, UnknownMasterKey):
            return None, "secret_unavailable", None
        timestamp = str(int(time.time()))
        # Sent to the address that was checked, under the URL's own name (Host header, TLS SNI and certificate
        # check): a second DNS answer cannot send the request elsewhere.
        headers = {"content-type": "application/cloudevents+json", "user-agent": USER_AGENT,
                   "webhook-id": str(delivery.event_id), "webhook-timestamp": timestamp,
                   "webhook-signature": signature_header(secrets, str(delivery.event_id), timestamp, delivery.body)}
        try:
            async with asyncio.timeout(TIMEOUT):
                assert self._client is not None
                answer = await self._client.post(destination, headers, delivery.body)
        except TimeoutError:
            return None, "timeout", None
        except DeliveryError:
            return None, "connection_error", None
        retry_after = retry_after_seconds(answer.headers.get("retry-after")) if answer.status == 429 else None
        return answer.status, None, retry_after

    def _secrets(self, delivery: Any) -> list[bytes]:
        if self._keys is None:
            raise UnknownMasterKey(delivery.master_key_id)
        context = delivery.webhook_id.encode()
        secrets = [self._keys.open(context, delivery.secret, delivery.master_key_id)]
        if delivery.previous_secret is not None and delivery.previous_valid_until > datetime.now(UTC):
            secrets.append(self._keys.open(context + b"\x00previous", delivery.previous_secret,
                                           delivery.master_key_id))
        return secrets
