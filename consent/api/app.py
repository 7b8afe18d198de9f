"""The Litestar application: wiring of adapters, services and controllers."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import secrets
from importlib.metadata import version

from litestar import Litestar
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.logging.config import LoggingConfig
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme

from consent.adapters import migrate
from consent.adapters.database import Database
from consent.adapters.log_checkpoints import Checkpointer
from consent.adapters.master_key import master_keys
from consent.adapters.memory_bus import InProcessBus
from consent.adapters.nats_feed import NatsFeed
from consent.adapters.nats_relay import Relay
from consent.adapters.partner_health_store import HealthFlusher, PartnerHealthReader
from consent.adapters.receipt_keys import load_or_generate
from consent.adapters.relay_process import RelayChild, relay_env
from consent.adapters.sql_credentials import SqlCredentialStore
from consent.adapters.sql_pseudonyms import SqlPseudonyms
from consent.adapters.sql_store import SqlSubjectReader, SqlUnitOfWork, load_catalog
from consent.adapters.subject_keys import SubjectKeys, forget_erased
from consent.adapters.write_batcher import WriteBatcher
from consent.adapters.write_cache import SubjectWriteCache
from consent.api import guards, health
from consent.api.audit import audit
from consent.api.auth import Authenticator
from consent.api.catalog import PartnerController, PurposeController, ScopeController
from consent.api.cors import cors_config
from consent.api.decisions import DecisionController, PermissionController
from consent.api.errors import problem_details_plugin
from consent.api.fast_consents import fast_consents
from consent.api.fast_decisions import fast_decisions
from consent.api.idp_tokens import identity_provider
from consent.api.metrics import metrics, metrics_registry
from consent.api.observability import observed
from consent.api.openapi_doc import DocumentedOpenAPIConfig
from consent.api.partner_access import CredentialController, authorization_server_metadata, revoke_token, token
from consent.api.partner_health import PartnerHealthController
from consent.api.pseudonyms import subject_pseudonym
from consent.api.receipts import ReceiptController, jwks
from consent.api.subjects import SubjectController
from consent.api.viewer import SCHEMA_PATH, index, render_plugins, schema_router
from consent.app.decisions import DecisionService
from consent.app.partner_access import PARTNER_SCOPE_DESCRIPTIONS, PartnerAccess
from consent.app.ports import Clock, SystemClock
from consent.app.pseudonyms import PseudonymService
from consent.app.rate_limit import RateLimiter
from consent.app.read_model import SubjectCache
from consent.app.receipts import ReceiptIssuer, ReceiptSettings
from consent.app.scheduler import Scheduler
from consent.app.services import ConsentService
from consent.app.subject_records import SubjectRecords
from consent.app.telemetry import Telemetry
from consent.config import Settings

log = logging.getLogger("consent")

API_VERSION = version("consent")  # the package's version (pyproject.toml): one source of truth


class Container:
    """The process's adapters and services, built at start-up."""

    service: ConsentService
    decisions: DecisionService
    subjects: SubjectCache
    partner_access: PartnerAccess
    pseudonyms: PseudonymService
    authenticator: Authenticator

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.database = Database(settings.database_url)
        self.bus = InProcessBus()
        self.relay: Relay | RelayChild | None = None
        self.feed: NatsFeed | None = None
        # Traffic by partner and route (GET /metrics), flushed for partner health (consent/app/partner_health.py).
        self.telemetry = Telemetry(lambda partner_id: partner_id in self.service.catalog.partners)
        self.partner_health = PartnerHealthReader(self.database, clock, settings.metrics_flush_interval)

    async def start(self) -> None:
        settings = self.settings
        settings.require_shared_keys()  # SettingsError on PostgreSQL without them, unless explicitly allowed
        if missing := settings.missing_shared_keys():
            log.warning("CONSENT_ALLOW_EPHEMERAL_KEYS: starting without %s; not for production "
                        "(`consent keys init` makes them)", ", ".join(missing))
        if settings.embedded:
            # The embedded default migrates itself; PostgreSQL is migrated by `consent db upgrade`.
            await _run_sync(migrate.upgrade, settings.database_url)
            log.info("embedded default: SQLite at %s and an in-process event bus", self.database.url.database)
        loaded = asyncio.Event()
        if settings.nats_url is not None:
            # Subscribed before the state is loaded, so that nothing committed in between is missed;
            # what it delivers waits until the state is there (versions make repeats harmless).
            async def catalog_changed(stream_id: str, stream_version: int) -> None:
                await loaded.wait()
                await self.service.refresh_catalog_entity(stream_id, stream_version)

            async def feed_events(events) -> None:
                await loaded.wait()
                forget_erased(self.subject_keys, events)
                self.write_cache.apply(events)
                await self.subjects.apply_from_feed(events)
                await self.partner_access.on_events(events)

            async def resync() -> None:
                await loaded.wait()
                self.subjects.clear()
                await self.service.reload_catalog()

            self.feed = NatsFeed(settings.nats_url, settings.nats_stream, settings.nats_subject_prefix,
                                 catalog_changed, feed_events, resync)
            await self.feed.start()
        async with self.database.reading() as conn:
            catalog, versions = await load_catalog(conn)
        pseudonym_key = settings.pseudonym_key.encode() if settings.pseudonym_key is not None else None
        # Seals personal fields in the log and opens them for readers (consent/adapters/subject_keys.py).
        self.subject_keys = SubjectKeys(master_keys(settings))
        self.write_cache = SubjectWriteCache(settings.write_cache_size)
        self.batcher = None if self.database.is_sqlite else WriteBatcher(self.database)
        unit_of_work = functools.partial(SqlUnitOfWork, self.database, keys=self.subject_keys,
                                         write_cache=self.write_cache, batcher=self.batcher)
        self.service = ConsentService(unit_of_work, self.bus, self.clock, catalog,
                                      versions, pseudonym_key=pseudonym_key)
        self.receipt_keys = load_or_generate(settings.receipt_keys)
        self.service.receipts = receipts = ReceiptIssuer(self.receipt_keys, ReceiptSettings(
            issuer=settings.receipt_issuer or settings.event_source, controller_name=settings.controller_name,
            controller_contact=settings.controller_contact, jurisdiction=settings.receipt_jurisdiction))
        self.records = SubjectRecords(unit_of_work, lambda: self.service.catalog,
                                      self.clock, receipts)
        self.subjects = subjects = SubjectCache(SqlSubjectReader(self.database), settings.subject_cache_size,
                                                pseudonyms=SqlPseudonyms(self.database))
        self.pseudonyms = PseudonymService(pseudonym_key, SqlPseudonyms(self.database),
                                           lambda: self.service.catalog, subjects)
        await subjects.start()
        self.decisions = DecisionService(subjects, lambda: self.service.catalog, self.clock,
                                         sandbox_prefix=settings.sandbox_subject_prefix, telemetry=self.telemetry)
        signing_key = settings.token_signing_key
        if signing_key is None:
            signing_key = secrets.token_urlsafe(32)
            log.warning("CONSENT_TOKEN_SIGNING_KEY is not set: partner tokens are valid in this process only")
        self.partner_access = PartnerAccess(SqlCredentialStore(self.database), lambda: self.service.catalog,
                                            self.clock, signing_key, settings.token_ttl, self.bus,
                                            settings.credential_overlap)
        await self.partner_access.start()
        self.authenticator = Authenticator(settings.admin_keys, settings.user_token_secret, self.partner_access,
                                           RateLimiter(settings.partner_rate_limit),
                                           identity_provider=await identity_provider(settings))

        async def feed_read_model(events) -> None:
            subjects.apply(events)

        self.bus.subscribe(feed_read_model)
        loaded.set()
        self.bus.subscribe(self.partner_access.on_events)
        self.scheduler = Scheduler(self.service, settings.scheduler_interval)
        self.bus.subscribe(self.scheduler.on_events)
        if settings.scheduler_interval > 0:
            await self.scheduler.start()
        self.checkpointer = Checkpointer(self.database, settings.checkpoint_interval)
        if settings.checkpoint_interval > 0:
            await self.checkpointer.start()
        self.health_flusher = HealthFlusher(self.database, self.telemetry, self.clock,
                                            settings.metrics_flush_interval)
        if settings.metrics_flush_interval > 0:
            await self.health_flusher.start()
        if settings.nats_url is not None and settings.relay == "process":
            self.relay = RelayChild(relay_env(settings))
            await self.relay.start()
        elif settings.nats_url is not None and settings.relay == "inline":
            self.relay = Relay(self.database, settings.nats_url, settings.event_source, settings.nats_stream,
                               settings.nats_subject_prefix)

            async def wake_relay(_events) -> None:
                self.relay.wake()

            self.bus.subscribe(wake_relay)
            await self.relay.start()

    async def stop(self) -> None:
        # Also after a start that failed half-way: stop what was started. One part failing to stop
        # must not leave the others running or the pool open.
        try:
            for part in (getattr(self, "scheduler", None), getattr(self, "checkpointer", None), self.feed,
                         self.relay, getattr(self, "health_flusher", None)):  # the flusher's last flush
                if part is not None:
                    try:
                        await part.stop()
                    except Exception as error:  # noqa: BLE001 - logged by type; the rest still stops
                        log.warning("%s did not stop cleanly (%s)", type(part).__name__, type(error).__name__)
        finally:
            await self.database.dispose()

    def metrics(self) -> dict:
        facts: dict = {"position": self.subjects.position, "cache_entries": len(self.subjects),
                       "decisions": self.telemetry.decisions_by_outcome(), "events": dict(self.service.appended),
                       "telemetry": self.telemetry}
        if self.relay is not None:
            facts["relay_leader"] = int(self.relay.is_leader)
            facts["relay_published_position"] = self.relay.published_position
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
        return checks, details


async def _run_sync(fn, *args) -> None:
    import anyio.to_thread

    await anyio.to_thread.run_sync(fn, *args)


def thin_routes(container: Container) -> list:
    """The hot routes answered without Litestar's machinery (each can be turned off)."""
    settings = container.settings
    return ([fast_decisions(lambda: container.authenticator, lambda: container.decisions, settings.max_body_bytes)]
            * settings.fast_decisions
            + [fast_consents(lambda: container.authenticator, lambda: container.service, settings.max_body_bytes)]
            * settings.fast_writes)


_COLLECTOR_THRESHOLDS = gc.get_threshold()


def tune_garbage_collector() -> None:
    """What start-up built (modules, the app, the catalog) lives as long as the process: frozen out of the
    collector's full passes, which otherwise scan it all and stall every request in flight for ~80 ms,
    several times a minute under load. Young collections run every 10,000 allocations instead of 700,
    which makes full passes rarer still (write p99 33 -> 17 ms; BENCHMARKS.md, issue 3). Undone at
    shutdown, so that a process starting many apps (the tests) does not keep their cycles. (No collection
    first: with a large heap it costs more than the little start-up garbage it would spare.)"""
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


def restore_garbage_collector() -> None:
    gc.unfreeze()
    gc.set_threshold(*_COLLECTOR_THRESHOLDS)


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> Litestar:
    container = Container(settings or Settings.from_env(), clock or SystemClock())

    registry = metrics_registry(container.metrics)
    app = Litestar(
        route_handlers=[health.live, health.ready, metrics, PurposeController, ScopeController, PartnerController,
                        SubjectController, CredentialController, token, revoke_token, audit, DecisionController,
                        PermissionController, subject_pseudonym, jwks, ReceiptController,
                        authorization_server_metadata, index, PartnerHealthController],
        dependencies={
            "principal": Provide(guards.principal),  # authenticated by the route's guard
            "service": Provide(lambda: container.service, sync_to_thread=False),
            "decisions": Provide(lambda: container.decisions, sync_to_thread=False),
            "pseudonyms": Provide(lambda: container.pseudonyms, sync_to_thread=False),
            "receipt_keys": Provide(lambda: container.receipt_keys, sync_to_thread=False),
            "records": Provide(lambda: container.records, sync_to_thread=False),
            "partner_access": Provide(lambda: container.partner_access, sync_to_thread=False),
            "readiness": Provide(lambda: container.readiness, sync_to_thread=False),
            "metrics_registry": Provide(lambda: registry, sync_to_thread=False),
            "partner_health": Provide(lambda: container.partner_health, sync_to_thread=False),
        },
        plugins=[problem_details_plugin()],
        middleware=thin_routes(container),
        on_startup=[container.start, tune_garbage_collector],
        on_shutdown=[container.stop, restore_garbage_collector],
        # Operation ids, public routes, error answers and examples: consent/api/openapi_doc.py.
        openapi_config=DocumentedOpenAPIConfig(
            title="Consent service", version=API_VERSION, path=SCHEMA_PATH,
            render_plugins=render_plugins(), openapi_router=schema_router(),
            components=Components(security_schemes={
                "bearer": SecurityScheme(type="http", scheme="bearer",
                                         description="Admin key, partner access token, or end-user JWT: HS256 "
                                         "signed with CONSENT_USER_TOKEN_SECRET, or RS256/ES256 from the identity "
                                         "provider's JWKS (CONSENT_USER_JWKS_URL; iss and aud checked)"),
                # The same partner tokens, described with the OAuth scopes each route needs.
                "partner": SecurityScheme(type="oauth2", description="Partner access tokens (client credentials)",
                                          flows=OAuthFlows(client_credentials=OAuthFlow(
                                              token_url="/v1/oauth/token", scopes=PARTNER_SCOPE_DESCRIPTIONS))),
                # How a partner's client authenticates at /v1/oauth/token and /v1/oauth/revoke, or in the form.
                "client": SecurityScheme(type="http", scheme="basic",
                                         description="client_id and client_secret, each form-urlencoded "
                                         "(RFC 6749 §2.3.1); or both as form fields instead, never both ways"),
            }),
            security=[{"bearer": []}],
        ),
        # Leave the root logger to whoever runs the app (`consent serve`, a test, a host's own setup):
        # Litestar's default replaces the root's handlers, and with them any that audit the log lines.
        logging_config=LoggingConfig(configure_root_logger=False),
        request_max_body_size=container.settings.max_body_bytes,  # 413 payload_too_large beyond
        cors_config=cors_config(container.settings.cors_origins),
        # Answers carry personal data or credentials: no cache may keep them.
        cache_control=CacheControlHeader(no_store=True),
    )
    app.state.container = container
    # Outermost, around Litestar's router, its thin routes and its error handling: request ids, HTTP metrics
    # and the access line for every request (consent/api/observability.py).
    app.asgi_handler = observed(app.asgi_handler, container.telemetry, container.settings.access_log)
    return app
