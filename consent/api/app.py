"""The Litestar application: routes, dependencies, plugins, middleware and the OpenAPI document, wired to
the parts that the composition root (consent/bootstrap.py) builds."""

from __future__ import annotations

import gc
from importlib.metadata import version

from litestar import Litestar
from litestar.datastructures import CacheControlHeader
from litestar.di import Provide
from litestar.logging.config import LoggingConfig
from litestar.openapi.spec import Components, OAuthFlow, OAuthFlows, SecurityScheme

from consent.api import guards, health
from consent.api.audit import audit
from consent.api.catalog import PartnerController, PurposeController, ScopeController
from consent.api.catalog_code import apply_catalog, export_catalog, plan_catalog
from consent.api.cors import cors_config
from consent.api.decisions import DecisionController, PermissionController
from consent.api.errors import problem_details_plugin
from consent.api.fast_consents import consent_route
from consent.api.fast_decisions import decision_route
from consent.api.hot_routes import HotRoutes
from consent.api.metrics import metrics, metrics_registry
from consent.api.observability import observed
from consent.api.openapi_doc import DocumentedOpenAPIConfig
from consent.api.partner_access import CredentialController, authorization_server_metadata, revoke_token, token
from consent.api.partner_health import PartnerHealthController
from consent.api.privacy_center import PrivacyCenterController, SessionLinkController
from consent.api.pseudonyms import subject_pseudonym
from consent.api.receipts import ReceiptController, jwks
from consent.api.subjects import SubjectController
from consent.api.viewer import SCHEMA_PATH, index, render_plugins, schema_router
from consent.api.webhooks import WebhookController
from consent.app.partner_access import OPT_IN_SCOPE_DESCRIPTIONS, PARTNER_SCOPE_DESCRIPTIONS
from consent.app.ports import Clock, SystemClock
from consent.bootstrap import Container
from consent.config import Settings

API_VERSION = version("consent")  # the package's version (pyproject.toml): one source of truth


def hot_routes(container: Container) -> HotRoutes:
    """The two hot routes, answered before Litestar's router (each can be turned off)."""
    settings = container.settings
    decide = decision_route(lambda: container.authenticator, lambda: container.decisions, settings.max_body_bytes)
    change = consent_route(lambda: container.authenticator, lambda: container.subject_service, settings.max_body_bytes)
    return HotRoutes(decide if settings.fast_decisions else None, change if settings.fast_writes else None,
                     cors=bool(settings.cors_origins))


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
                        authorization_server_metadata, index, PartnerHealthController, SessionLinkController,
                        PrivacyCenterController, export_catalog, plan_catalog, apply_catalog, WebhookController],
        dependencies={
            "principal": Provide(guards.principal),  # authenticated by the route's guard
            "catalogs": Provide(lambda: container.catalog_service, sync_to_thread=False),
            "subjects": Provide(lambda: container.subject_service, sync_to_thread=False),
            "audits": Provide(lambda: container.audit_service, sync_to_thread=False),
            "decisions": Provide(lambda: container.decisions, sync_to_thread=False),
            "pseudonyms": Provide(lambda: container.pseudonyms, sync_to_thread=False),
            "receipt_keys": Provide(lambda: container.receipt_keys, sync_to_thread=False),
            "records": Provide(lambda: container.records, sync_to_thread=False),
            "partner_access": Provide(lambda: container.partner_access, sync_to_thread=False),
            "readiness": Provide(lambda: container.readiness, sync_to_thread=False),
            "metrics_registry": Provide(lambda: registry, sync_to_thread=False),
            "partner_health": Provide(lambda: container.partner_health, sync_to_thread=False),
            "webhooks": Provide(lambda: container.webhooks.service, sync_to_thread=False),
        },
        plugins=[problem_details_plugin()],
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
                # The opt-in scope, a credential's only when asked for (the scopes above are every credential's
                # default): the same tokens, from the same endpoint.
                "webhooks": SecurityScheme(type="oauth2", description="Partner access tokens whose credential "
                                           "was issued with the opt-in scope webhooks:manage",
                                           flows=OAuthFlows(client_credentials=OAuthFlow(
                                               token_url="/v1/oauth/token", scopes=OPT_IN_SCOPE_DESCRIPTIONS))),
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
    # Outermost, around Litestar's router and its error handling: request ids, HTTP metrics and the access
    # line for every request, and the two hot routes answered before the router (consent/api/observability.py).
    app.asgi_handler = observed(app.asgi_handler, container.telemetry, container.settings.access_log,
                                hot_routes(container))
    return app
