"""The composition root: builds the process's adapters and services from its settings, starts and stops them,
and declares once which parts each committed event reaches (`event_reach`). The web app (consent/api/app.py)
asks the Container for parts and wires them into Litestar; nothing else builds an adapter."""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import anyio.to_thread

from consent.adapters import migrate
from consent.adapters.database import database_of
from consent.adapters.log_checkpoints import Checkpointer
from consent.adapters.master_key import master_keys
from consent.adapters.memory_bus import InProcessBus
from consent.adapters.nats_feed import NatsFeed
from consent.adapters.nats_presence import ReplicaPresence
from consent.adapters.nats_relay import Relay
from consent.adapters.nats_stream import stream_target
from consent.adapters.partner_health_store import HealthFlusher, PartnerHealthReader
from consent.adapters.postgres import WriteBatcher
from consent.adapters.receipt_keys import load_or_generate
from consent.adapters.relay_process import RelayChild, relay_env
from consent.adapters.sql_credentials import SqlCredentialStore
from consent.adapters.sql_impact import SqlImpact
from consent.adapters.sql_privacy_center import SqlSessionStore
from consent.adapters.sql_pseudonyms import SqlPseudonyms
from consent.adapters.sql_reads import SqlSubjectReader, load_catalog
from consent.adapters.sql_unit_of_work import SqlUnitOfWork, recorder_for
from consent.adapters.subject_keys import SubjectKeys, forget_erased
from consent.adapters.webhook_parts import WebhookParts
from consent.adapters.webhook_process import WebhookSenderChild
from consent.adapters.write_cache import SubjectWriteCache
from consent.api.auth import Authenticator
from consent.api.idp_tokens import identity_provider
from consent.app.audit import AuditService
from consent.app.catalog_documents import CatalogDocuments
from consent.app.catalog_service import CatalogService
from consent.app.decisions import DecisionService, Past
from consent.app.partner_access import PartnerAccess
from consent.app.ports import Clock, RecordedEvent
from consent.app.privacy_center import PrivacyCenterSessions
from consent.app.pseudonyms import PseudonymService
from consent.app.rate_limit import RateLimiter
from consent.app.read_model import SubjectCache
from consent.app.receipts import ReceiptIssuer, ReceiptSettings
from consent.app.scheduler import LedgerRetention, Scheduler
from consent.app.subject_records import SubjectRecords
from consent.app.subject_service import SubjectService
from consent.app.telemetry import Telemetry
from consent.app.writing import Publisher
from consent.config import Settings

log = logging.getLogger("consent")

EventHandler = Callable[[list[RecordedEvent]], Awaitable[None]]


class Container:
    """The process's adapters and services, built at start-up."""

    catalog_service: CatalogService
    subject_service: SubjectService
    audit_service: AuditService
    decisions: DecisionService
    subjects: SubjectCache
    partner_access: PartnerAccess
    pseudonyms: PseudonymService
    authenticator: Authenticator

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.database = database_of(settings)
        self.bus = InProcessBus()
        self.relay: Relay | RelayChild | None = None
        self.feed: NatsFeed | None = None
        self.presence: ReplicaPresence | None = None  # replicas that share the rate limit (with NATS)
        # Traffic by partner and route (GET /metrics), flushed for partner health (consent/app/partner_health.py).
        self.telemetry = Telemetry(lambda partner_id: partner_id in self.catalog_service.catalog.partners)
        self.partner_health = PartnerHealthReader(self.database, clock, settings.metrics_flush_interval)
        # Set once the state is loaded: what the feed delivers before then waits for it.
        self._loaded = asyncio.Event()
        self._feed_handlers: list[EventHandler] = []

    async def start(self) -> None:
        settings = self.settings
        settings.require_shared_keys()  # SettingsError on PostgreSQL without them, unless explicitly allowed
        if missing := settings.missing_shared_keys():
            log.warning("CONSENT_ALLOW_EPHEMERAL_KEYS: starting without %s; not for production "
                        "(`consent keys init` makes them)", ", ".join(missing))
        if settings.embedded:
            # The embedded default migrates itself; PostgreSQL is migrated by `consent db upgrade`.
            await anyio.to_thread.run_sync(migrate.upgrade, settings.database_url)
            log.info("embedded default: SQLite at %s and an in-process event bus", self.database.url.database)
        if settings.nats_url is not None:
            # Subscribed before the state is loaded, so that nothing committed in between is missed;
            # what it delivers waits until the state is there (versions make repeats harmless).
            self.feed = NatsFeed(stream_target(settings), self._catalog_changed, self._events_from_other_replicas,
                                 self._resync)
            await self.feed.start()
        await self._build_services()
        self._build_background_parts()
        reach = event_reach(self)
        for handler in events_committed_here(reach):
            self.bus.subscribe(handler)
        self._feed_handlers = events_from_other_replicas(reach)
        self._loaded.set()
        if settings.scheduler_interval > 0:
            await self.scheduler.start()
        if settings.checkpoint_interval > 0:
            await self.checkpointer.start()
        if settings.metrics_flush_interval > 0:
            await self.health_flusher.start()
        if self.relay is not None:
            await self.relay.start()
        await self.webhooks.start()
        if self.presence is not None:
            await self.presence.start()

    async def _build_services(self) -> None:
        settings = self.settings
        async with self.database.reading() as conn:
            catalog, versions = await load_catalog(conn)
        pseudonym_key = settings.pseudonym_key.encode() if settings.pseudonym_key is not None else None
        # Seals personal fields in the log and opens them for readers (consent/adapters/subject_keys.py).
        self.master_keys = master_keys(settings)
        self.subject_keys = SubjectKeys(self.master_keys)
        self.write_cache = SubjectWriteCache(settings.write_cache_size)
        self.batcher = None if self.database.is_sqlite else WriteBatcher(self.database)
        # The backend's recorder is chosen here, once (consent/adapters/recorder.py).
        unit_of_work = functools.partial(SqlUnitOfWork, self.database, keys=self.subject_keys,
                                         write_cache=self.write_cache, batcher=self.batcher,
                                         recorder=recorder_for(self.database))
        self.publisher = publisher = Publisher(self.bus)
        self.catalog_service = CatalogService(unit_of_work, publisher, self.clock, catalog, versions,
                                              pseudonym_key=pseudonym_key)
        self.subject_service = SubjectService(unit_of_work, publisher, self.clock, catalog,
                                              pseudonym_key=pseudonym_key)
        self.audit_service = AuditService(unit_of_work, publisher, self.clock)
        self.catalog_documents = CatalogDocuments(unit_of_work, self.catalog_service, SqlImpact(self.database),
                                                  self.clock, pseudonym_key=pseudonym_key)
        self.privacy_center = PrivacyCenterSessions(SqlSessionStore(self.database), self.clock,
                                                    settings.privacy_center_link_ttl,
                                                    settings.privacy_center_session_ttl)
        self.receipt_keys = load_or_generate(settings.receipt_keys)
        self.subject_service.receipts = receipts = ReceiptIssuer(self.receipt_keys, ReceiptSettings(
            issuer=settings.receipt_issuer or settings.event_source, controller_name=settings.controller_name,
            controller_contact=settings.controller_contact, jurisdiction=settings.receipt_jurisdiction))
        # The one catalog object, updated in place by the catalog service: readers hold it directly.
        self.records = SubjectRecords(unit_of_work, lambda: catalog, self.clock, receipts)
        self.subjects = subjects = SubjectCache(SqlSubjectReader(self.database), settings.subject_cache_size,
                                                pseudonyms=SqlPseudonyms(self.database),
                                                followed_by_feed=settings.nats_url is not None)
        self.pseudonyms = PseudonymService(pseudonym_key, SqlPseudonyms(self.database),
                                           lambda: catalog, subjects)
        await subjects.start()
        self.decisions = DecisionService(subjects, lambda: catalog, self.clock,
                                         sandbox_prefix=settings.sandbox_subject_prefix, telemetry=self.telemetry,
                                         past=Past(self.subject_service.state_at, self.catalog_service.catalog_at))
        signing_key = settings.token_signing_key
        if signing_key is None:
            signing_key = secrets.token_urlsafe(32)
            log.warning("CONSENT_TOKEN_SIGNING_KEY is not set: partner tokens are valid in this process only")
        self.partner_access = PartnerAccess(SqlCredentialStore(self.database), lambda: catalog,
                                            self.clock, signing_key, settings.token_ttl, self.bus,
                                            settings.credential_overlap)
        await self.partner_access.start()
        # Partners' webhooks: endpoints, the delivery ledger, the dispatcher and this process's sender.
        self.webhooks = WebhookParts(settings, self.database, lambda: catalog, self.clock, self.master_keys,
                                     publisher, pseudonym_key)
        self.rate_limiter = RateLimiter(settings.partner_rate_limit)
        self.authenticator = Authenticator(settings.admin_keys, settings.user_token_secret, self.partner_access,
                                           self.rate_limiter, identity_provider=await identity_provider(settings))

    def _build_background_parts(self) -> None:
        """Built here, started by `start` once the events reach them; each interval 0 leaves its loop off."""
        settings = self.settings
        self.scheduler = Scheduler(self.catalog_service, self.subject_service, settings.scheduler_interval,
                                   settings.webhook_contract_notice_days,
                                   LedgerRetention(self.webhooks.ledger, self.clock, settings.webhook_ledger_days))
        self.checkpointer = Checkpointer(self.database, settings.checkpoint_interval)
        self.health_flusher = HealthFlusher(self.database, self.telemetry, self.clock,
                                            settings.metrics_flush_interval)
        if settings.nats_url is not None and settings.relay == "process":
            self.relay = RelayChild(relay_env(settings))
        elif settings.nats_url is not None and settings.relay == "inline":
            self.relay = Relay(self.database, stream_target(settings), settings.event_source)
        if settings.nats_url is not None:
            self.presence = ReplicaPresence(stream_target(settings), self._replicas_counted)

    def _replicas_counted(self, live: int) -> None:
        self.rate_limiter.replicas = live

    # What the feed delivers from other replicas (subscribed before the state exists: each waits for it).
    async def _catalog_changed(self, stream_id: str, stream_version: int) -> None:
        await self._loaded.wait()
        await self.catalog_service.refresh(stream_id, stream_version)

    async def _events_from_other_replicas(self, events: list[RecordedEvent]) -> None:
        await self._loaded.wait()
        for handler in self._feed_handlers:
            await handler(events)

    async def _resync(self) -> None:
        # The feed lost its place: what is cached may have missed events.
        await self._loaded.wait()
        self.subjects.clear()
        await self.catalog_service.reload()

    async def stop(self) -> None:
        # Also after a start that failed half-way: stop what was started. One part failing to stop
        # must not leave the others running or the pool open.
        try:
            for part in (self.presence, getattr(self, "scheduler", None), getattr(self, "checkpointer", None),
                         self.feed, self.relay, getattr(self, "webhooks", None),
                         getattr(self, "health_flusher", None)):  # the flusher's last flush
                if part is not None:
                    try:
                        await part.stop()
                    except Exception as error:  # noqa: BLE001 - logged by type; the rest still stops
                        log.warning("%s did not stop cleanly (%s)", type(part).__name__, type(error).__name__)
        finally:
            await self.database.dispose()

    def metrics(self) -> dict:
        facts: dict = {"position": self.subjects.position, "cache_entries": len(self.subjects),
                       "decisions": self.telemetry.decisions_by_outcome(), "events": dict(self.publisher.appended),
                       "telemetry": self.telemetry}
        if self.presence is not None:
            facts["replicas_live"] = self.presence.live
        if self.relay is not None:
            facts["relay_leader"] = int(self.relay.is_leader)
            facts["relay_published_position"] = self.relay.published_position
        if self.webhooks.sender is not None:
            facts["webhook_attempts"] = dict(self.webhooks.sender.attempts)
        return facts

    async def readiness(self) -> tuple[dict[str, bool], dict[str, object]]:
        """(checks that must all pass, facts worth showing an operator)."""
        try:
            await self.database.ping()
            database = True
        except Exception:  # noqa: BLE001 - any failure means not ready
            database = False
        checks = {"database": database}
        details: dict[str, object] = {"position": self.subjects.position}
        if self.feed is not None and database:
            # Behind the log by more than the bound: answers without min_position would be stale.
            lag = await self.subjects.lag()
            checks["feed"] = self.feed.connected and lag <= self.settings.ready_max_lag
            details["feed_lag"] = lag
        if self.relay is not None:
            checks["nats"] = self.relay.connected
            details["relay"] = {"leader": self.relay.is_leader,
                                "published_position": self.relay.published_position,
                                "mode": self.settings.relay}
            if isinstance(self.relay, RelayChild):
                details["relay"].update(pid=self.relay.pid, starts=self.relay.starts)
        sender = self.webhooks.sender
        if isinstance(sender, WebhookSenderChild):
            # Not a check: deliveries wait in the ledger while it restarts; decisions and writes go on.
            details["webhook_sender"] = {"mode": "process", "pid": sender.pid, "starts": sender.starts,
                                         "listening": sender.listening, "in_flight": sender.in_flight,
                                         "dispatcher_leader": sender.is_leader,
                                         "dispatched_position": sender.position}
        return checks, details


class EventReach(NamedTuple):
    """One part of the process that follows the log: its handler for events committed in this process (the
    in-process bus) and for events other replicas committed (the NATS feed); None where it needs nothing."""

    part: str
    committed_here: EventHandler | None
    from_other_replicas: EventHandler | None


def event_reach(container: Container) -> list[EventReach]:
    """Every part that events reach, in the order they reach it: the one table both the bus and the feed
    are subscribed from, so the two cannot drift apart."""
    subjects, write_cache, subject_keys = container.subjects, container.write_cache, container.subject_keys
    relay = container.relay

    async def apply_to_read_model(events: list[RecordedEvent]) -> None:
        subjects.apply(events)

    async def forget_keys_of_erased(events: list[RecordedEvent]) -> None:
        forget_erased(subject_keys, events)

    async def update_write_cache(events: list[RecordedEvent]) -> None:
        write_cache.apply(events)

    async def wake_relay(_events: list[RecordedEvent]) -> None:
        relay.wake()

    return [
        # A subject erased here had its data key forgotten by the unit of work that erased it; erased
        # elsewhere, the key this process unwrapped must go from memory too.
        EventReach("subject keys", None, forget_keys_of_erased),
        # The unit of work remembers the head of each subject it writes here; a write elsewhere overtakes it.
        EventReach("write cache", None, update_write_cache),
        # Events from the feed may name a pairwise partner's pseudonym instead of the subject: unmasked first.
        EventReach("subject read model", apply_to_read_model, subjects.apply_from_feed),
        # An erasure ends the subject's privacy center sessions (kept in the database: one replica suffices).
        EventReach("privacy center sessions", container.privacy_center.on_events, None),
        # Revoked credentials and tokens stop working in every replica.
        EventReach("partner access", container.partner_access.on_events, container.partner_access.on_events),
        # A partner terminated here has its grants withdrawn at once; each replica also sweeps on its own
        # interval, and one sweeper is enough (the claims lock what they take: consent/app/scheduler.py).
        EventReach("scheduler", container.scheduler.on_events, None),
        # Only an inline relay shares this event loop: woken after a commit, so that publish lag is not a
        # polling interval. Events from the feed are published already.
        EventReach("relay", wake_relay if isinstance(relay, Relay) else None, None),
    ]


def events_committed_here(reach: list[EventReach]) -> list[EventHandler]:
    return [part.committed_here for part in reach if part.committed_here is not None]


def events_from_other_replicas(reach: list[EventReach]) -> list[EventHandler]:
    return [part.from_other_replicas for part in reach if part.from_other_replicas is not None]
