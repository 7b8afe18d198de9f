"""The webhook machinery of one process, built from the settings (the composition root, consent/bootstrap.py,
holds one): the endpoints' store, the delivery ledger, the dispatcher (one leader among the replicas), this
replica's sender (inline, both in a child process, or neither: CONSENT_WEBHOOK_SENDER), and the use cases the
routes call."""

from __future__ import annotations

from collections.abc import Callable

from consent.adapters.cipher import MasterKeys
from consent.adapters.database import Database
from consent.adapters.sql_webhooks import SqlWebhooks
from consent.adapters.url_guard import UrlGuard
from consent.adapters.webhook_dispatch import Router, WebhookDispatcher
from consent.adapters.webhook_ledger import DeliveryLedger
from consent.adapters.webhook_process import WebhookSenderChild
from consent.adapters.webhook_replay import Replayer
from consent.adapters.webhook_sender import WebhookSender, sender_of
from consent.app.ports import Clock
from consent.app.webhooks import WebhookService
from consent.app.writing import Publisher
from consent.config import Settings
from consent.domain.catalog import Catalog


class _Ports:
    """What the use cases reach through (consent/app/webhooks.py, WebhookPorts)."""

    def __init__(self, parts: WebhookParts) -> None:
        self.endpoints = parts.endpoints
        self.ledger = parts.ledger
        self.check_url = parts.guard.destination
        self.replay = parts.replayer
        self.wake_sender = parts.wake_sender
        self.endpoints_changed = parts.endpoints_changed


class WebhookParts:
    def __init__(self, settings: Settings, database: Database, catalog: Callable[[], Catalog], clock: Clock,
                 keys: MasterKeys | None, publisher: Publisher, pseudonym_key: bytes | None) -> None:
        self.endpoints = SqlWebhooks(database)
        self.ledger = DeliveryLedger(database)
        self.guard = UrlGuard(settings.webhook_allow_http, settings.webhook_allowed_hosts)
        router = Router(catalog, settings.event_source, pseudonym_key)
        self.replayer = Replayer(database, self.ledger, router)
        self.service = WebhookService(_Ports(self), catalog, clock, keys, publisher, settings.credential_overlap)
        # Delivery: the dispatcher follows the log into the ledger, the sender POSTs from it. In this process,
        # in a child process of its own, or elsewhere (`consent webhook-sender`).
        self.dispatcher: WebhookDispatcher | None = None
        self.sender: WebhookSender | WebhookSenderChild | None = None
        if settings.webhook_sender == "inline":
            self.sender = sender_of(settings, self.ledger, keys, self.service.disable_gone)
            self.dispatcher = WebhookDispatcher(database, self.ledger, router, self.endpoints, self.sender.wake)
        elif settings.webhook_sender == "process":
            self.sender = WebhookSenderChild(settings)

    def wake_sender(self) -> None:
        """Only an inline sender: the others are woken by NOTIFY."""
        if isinstance(self.sender, WebhookSender):
            self.sender.wake()

    def endpoints_changed(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.endpoints_changed()

    async def start(self) -> None:
        for part in (self.dispatcher, self.sender):
            if part is not None:
                await part.start()

    async def stop(self) -> None:
        for part in (self.dispatcher, self.sender):
            if part is not None:
                await part.stop()
