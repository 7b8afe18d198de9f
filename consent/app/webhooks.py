"""Use cases of partners' webhooks: register, read, change, delete, rotate the secret; read the delivery ledger,
retry a delivery, replay events (docs/webhooks.md).

The secret (`whsec_` + base64 of 32 random bytes) is shown once, when it is made, and kept only sealed by the
master key. Every change is an event of the webhook's stream, naming who made it: the audit trail. Events
carry the URL without its query (which may hold a token of the partner's) and never a secret.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from consent.app.ports import Clock, RecordedEvent
from consent.app.webhook_views import CreatedWebhook, DeliveryPage, ReplayResult, RotatedSecret, WebhookView, delivery
from consent.app.writing import Publisher
from consent.domain.catalog import Catalog
from consent.domain.errors import Conflict, DomainError, NotFound
from consent.domain.events import (
    WebhookDeleted,
    WebhookDeliveriesRequeued,
    WebhookDisabled,
    WebhookRegistered,
    WebhookSecretRotated,
    WebhookUpdated,
)
from consent.domain.webhook_audience import DELIVERED_TYPES

SECRET_PREFIX = "whsec_"
MAX_WEBHOOKS = 10  # per partner
MAX_DESCRIPTION = 500
CLOUDEVENT_PREFIX = "io.consent.v1."


class SecretSealer(Protocol):
    current_id: str

    def seal(self, context: bytes, plaintext: bytes) -> bytes: ...

    def open(self, context: bytes, sealed: bytes, sealed_by: str) -> bytes: ...


class WebhookPorts(Protocol):
    """What the use cases need from the adapters (consent/bootstrap.py wires them)."""

    endpoints: Any  # consent/adapters/sql_webhooks.py
    ledger: Any  # consent/adapters/webhook_ledger.py
    check_url: Callable[[str], Awaitable[Any]]  # consent/adapters/url_guard.py, UrlGuard.destination
    replay: Callable[[Any, int], Awaitable[tuple[int, int, bool]]]  # enqueued, up to position, complete
    wake_sender: Callable[[], None]
    endpoints_changed: Callable[[], None]  # the dispatcher need not wait for its next idle look


def previous_context(webhook_id: str) -> bytes:
    return webhook_id.encode() + b"\x00previous"


def check_events(events: list[str] | None) -> tuple[str, ...] | None:
    """The event types asked for, in the log's form (`subject.withdrawn`; the CloudEvents type is accepted)."""
    if events is None:
        return None
    named = tuple(sorted({event.removeprefix(CLOUDEVENT_PREFIX) for event in events}))
    unknown = [event for event in named if event not in DELIVERED_TYPES]
    if not named or unknown:
        raise DomainError("validation_failed", f"events must be null (every type) or a non-empty list of "
                          f"{', '.join(DELIVERED_TYPES)}")
    return named


def _without_query(url: str) -> str:
    return urlsplit(url)._replace(query="").geturl()


class WebhookService:
    def __init__(self, ports: WebhookPorts, catalog: Callable[[], Catalog], clock: Clock, keys: SecretSealer | None,
                 publisher: Publisher, rotation_overlap: int) -> None:
        self._ports = ports
        self._catalog = catalog
        self._clock = clock
        self._keys = keys
        self._publisher = publisher
        self._overlap = timedelta(seconds=rotation_overlap)

    async def register(self, partner_id: str, url: str, events: list[str] | None, description: str | None,
                       actor: str) -> CreatedWebhook:
        self._active_partner(partner_id)
        wanted = check_events(events)
        _check_description(description)
        keys = self._sealer()
        await self._ports.check_url(url)
        if len(await self._ports.endpoints.list(partner_id)) >= MAX_WEBHOOKS:
            raise Conflict("conflict", f"a partner has at most {MAX_WEBHOOKS} webhooks")
        now = self._clock.now()
        webhook_id = f"wh_{secrets.token_urlsafe(16)}"
        raw = secrets.token_bytes(32)
        row = {"id": webhook_id, "partner_id": partner_id, "url": url, "events": list(wanted) if wanted else None,
               "description": description, "enabled": True, "secret": keys.seal(webhook_id.encode(), raw),
               "previous_secret": None, "previous_valid_until": None, "master_key_id": keys.current_id,
               "created_at": now, "updated_at": now}
        event = WebhookRegistered(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id,
                                  url=_without_query(url), events=wanted)
        await self._publish(await self._ports.endpoints.add(row, event, actor))
        self._ports.endpoints_changed()
        view = WebhookView.of(row)
        return CreatedWebhook(**{f: getattr(view, f) for f in view.__struct_fields__},
                              secret=SECRET_PREFIX + base64.b64encode(raw).decode())

    async def list(self, partner_id: str) -> list[WebhookView]:
        self._catalog().partner(partner_id)
        return [WebhookView.of(row._mapping) for row in await self._ports.endpoints.list(partner_id)]

    async def get(self, partner_id: str, webhook_id: str) -> WebhookView:
        return WebhookView.of((await self._row(partner_id, webhook_id))._mapping)

    async def update(self, partner_id: str, webhook_id: str, changes: dict[str, Any], actor: str) -> WebhookView:
        current = (await self._row(partner_id, webhook_id))._mapping
        values: dict[str, Any] = {}
        if "url" in changes:
            await self._ports.check_url(changes["url"])
            values["url"] = changes["url"]
        if "events" in changes:
            wanted = check_events(changes["events"])
            values["events"] = list(wanted) if wanted else None
        if "description" in changes:
            _check_description(changes["description"])
            values["description"] = changes["description"]
        if changes.get("enabled") is True and not current["enabled"]:
            self._active_partner(partner_id)
        if "enabled" in changes:
            values["enabled"] = changes["enabled"]
        merged = {**current, **values}
        if merged == dict(current):
            return WebhookView.of(current)
        values["updated_at"] = now = self._clock.now()
        event = WebhookUpdated(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id,
                               url=_without_query(merged["url"]), events=_events(merged["events"]),
                               enabled=merged["enabled"])
        await self._change(partner_id, webhook_id, values, event, actor)
        if merged["enabled"]:
            self._ports.endpoints_changed()
            self._ports.wake_sender()  # enabled again: what waited for it may go
        return WebhookView.of({**merged, "updated_at": now})

    async def delete(self, partner_id: str, webhook_id: str, actor: str) -> None:
        event = WebhookDeleted(occurred_at=self._clock.now(), partner_id=partner_id, webhook_id=webhook_id)
        await self._change(partner_id, webhook_id, {}, event, actor)

    async def disable_gone(self, partner_id: str, webhook_id: str) -> None:
        """The receiver answered 410 Gone: the service stops delivering to it, and says so in the log."""
        now = self._clock.now()
        event = WebhookDisabled(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id)
        await self._change(partner_id, webhook_id, {"enabled": False, "updated_at": now}, event, "system")

    async def rotate_secret(self, partner_id: str, webhook_id: str, actor: str) -> RotatedSecret:
        current = (await self._row(partner_id, webhook_id))._mapping
        keys = self._sealer()
        old = keys.open(webhook_id.encode(), current["secret"], current["master_key_id"])
        now = self._clock.now()
        raw = secrets.token_bytes(32)
        valid_until = now + self._overlap
        values = {"secret": keys.seal(webhook_id.encode(), raw),
                  "previous_secret": keys.seal(previous_context(webhook_id), old),
                  "previous_valid_until": valid_until, "master_key_id": keys.current_id, "updated_at": now}
        event = WebhookSecretRotated(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id,
                                     previous_valid_until=valid_until)
        await self._change(partner_id, webhook_id, values, event, actor)
        return RotatedSecret(id=webhook_id, secret=SECRET_PREFIX + base64.b64encode(raw).decode(),
                             previous_secret_valid_until=valid_until)

    async def deliveries(self, partner_id: str, webhook_id: str, status: str | None, after: int,
                         limit: int) -> DeliveryPage:
        await self._row(partner_id, webhook_id)
        rows = await self._ports.ledger.page(webhook_id, status, after, limit)
        return DeliveryPage(deliveries=[delivery(row) for row in rows],
                            next_after=rows[-1].id if len(rows) == limit else None)

    async def retry(self, partner_id: str, webhook_id: str, delivery_id: int, actor: str):
        await self._row(partner_id, webhook_id)
        now = self._clock.now()
        row = await self._ports.ledger.requeue(webhook_id, delivery_id, now)
        if row is None:
            raise NotFound("delivery", str(delivery_id))
        event = WebhookDeliveriesRequeued(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id,
                                          delivery_id=delivery_id, count=1)
        await self._change(partner_id, webhook_id, {"updated_at": now}, event, actor)
        self._ports.wake_sender()
        return delivery(row)

    async def replay(self, partner_id: str, webhook_id: str, after_position: int, actor: str) -> ReplayResult:
        row = await self._row(partner_id, webhook_id)
        enqueued, up_to, complete = await self._ports.replay(row, after_position)
        now = self._clock.now()
        event = WebhookDeliveriesRequeued(occurred_at=now, partner_id=partner_id, webhook_id=webhook_id,
                                          after_position=after_position, count=enqueued)
        await self._change(partner_id, webhook_id, {"updated_at": now}, event, actor)
        self._ports.wake_sender()
        return ReplayResult(enqueued=enqueued, up_to_position=up_to, complete=complete)

    async def _row(self, partner_id: str, webhook_id: str) -> Any:
        self._catalog().partner(partner_id)
        row = await self._ports.endpoints.get(partner_id, webhook_id)
        if row is None:
            raise NotFound("webhook", webhook_id)
        return row

    async def _change(self, partner_id: str, webhook_id: str, values: dict[str, Any], event: Any,
                      actor: str) -> None:
        recorded = await self._ports.endpoints.change(partner_id, webhook_id, values, event, actor)
        if recorded is None:
            raise NotFound("webhook", webhook_id)
        await self._publish(recorded)

    async def _publish(self, recorded: list[RecordedEvent]) -> None:
        await self._publisher.committed(recorded)

    def _active_partner(self, partner_id: str) -> None:
        if self._catalog().partner(partner_id).status == "terminated":
            raise Conflict("partner_terminated", f"partner {partner_id!r} is terminated")

    def _sealer(self) -> SecretSealer:
        if self._keys is None:
            raise DomainError("master_key_missing", "webhook secrets are stored only encrypted, and this server "
                              "has no CONSENT_MASTER_KEY to do so")
        return self._keys


def _events(stored: list[str] | None) -> tuple[str, ...] | None:
    return tuple(stored) if stored is not None else None


def _check_description(description: str | None) -> None:
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise DomainError("validation_failed", f"description has at most {MAX_DESCRIPTION} characters")

