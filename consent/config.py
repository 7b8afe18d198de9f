"""Settings from the environment: each field of `Settings` is read from CONSENT_<FIELD NAME> and checked
against its declared form and bounds (consent/config_fields.py); docs/operations.md, Configuration, describes
them."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from msgspec import Struct

from consent.adapters.receipt_keys import is_inline, parse_key_set
from consent.config_fields import Bounds, SettingsError, check, env_variable, fields_of, parse
from consent.domain.key_encoding import decode_master_key
from consent.domain.pseudonyms import MIN_KEY_LENGTH

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./consent.db"
# What a browser sends as Origin: scheme, lower-case host and optional port; no path, no wildcard.
_ORIGIN = re.compile(r"https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")
_PUBLIC_URL = re.compile(r"https?://[^/?#\s]+(/[^?#\s]*)?")
_DATABASE_URL = re.compile(r"(sqlite|postgresql)(\+\w+)?://.*")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]+)?")

# The forms of settings, and their bounds (consent/config_fields.py). Named once here, used by many fields.
# The relay child's 3, and the server's: the write batcher's 1, two held by leaders, two for transactions, one
# for single statements (consent/adapters/database.py, split_budget).
MIN_POOL_SIZE = 10
Seconds = Annotated[int, Bounds(at_least=1, unit="seconds")]
Count = Annotated[int, Bounds(at_least=0)]
Interval = Annotated[float, Bounds(at_least=0, unit="seconds")]
Text = Annotated[str, Bounds(at_least=1)]
Secret = Annotated[str | None, Bounds(secret=True)]


class Settings(Struct, frozen=True):
    database_url: Annotated[str, Bounds(secret=True)] = EMBEDDED_DATABASE_URL  # may hold a password
    nats_url: Secret = None
    # On PostgreSQL, the connections one replica holds in all (its relay's included): N replicas need N times
    # this below the server's max_connections (docs/scaling.md). Requests beyond it wait their turn up to
    # database_pool_timeout seconds, then answer 503 with Retry-After.
    database_pool_size: Annotated[int, Bounds(at_least=MIN_POOL_SIZE)] = 20
    database_pool_timeout: Interval = 5.0
    # Seconds a request waits for a primary (a failover, the server restarting) before answering 503.
    database_failover_wait: Interval = 5.0
    admin_keys: Annotated[tuple[str, ...], Bounds(secret=True)] = ()
    user_token_secret: Secret = None
    token_ttl: Seconds = 900
    # Requests a second per partner; 0 = no limit.
    partner_rate_limit: Count = 1000
    event_source: Text = "/consent"
    # Signs partner access tokens; replicas must share it. Unset: a random key per process.
    token_signing_key: Secret = None
    subject_cache_size: Count = 100_000
    # Subjects whose last write here is remembered, so that their next write skips its read (~1 KB each).
    write_cache_size: Count = 10_000
    # POST /v1/decisions answered before Litestar's router (consent/api/hot_routes.py, fast_decisions.py).
    fast_decisions: bool = True
    # POST /v1/subjects/{id}/consents answered before Litestar's router (hot_routes.py, fast_consents.py).
    fast_writes: bool = True
    nats_stream: Text = "CONSENT"
    # Copies of the stream a NATS cluster keeps (1, 3 or 5 in practice); applied when the stream is created
    # or updated. CONSENT_NATS_URL may list several servers, comma-separated (nats://a:4222,nats://b:4222).
    nats_replicas: Annotated[int, Bounds(at_least=1)] = 1
    # Where the outbox relay runs: "inline" (this process's event loop), "process" (a child process
    # that `consent serve` supervises) or "off" (none here: run `consent relay` apart).
    relay: Literal["inline", "process", "off"] = "inline"
    # Where this replica delivers partners' webhooks (the dispatcher that fills the ledger from the log, and the
    # sender that POSTs from it): "inline" (this process's event loop), "process" (a child process that
    # `consent serve` supervises) or "off" (neither here: run `consent webhook-sender` apart). The last two
    # need PostgreSQL.
    webhook_sender: Literal["inline", "process", "off"] = "inline"
    # Subjects a partner in the sandbox may ask about: test data only.
    sandbox_subject_prefix: Text = "sandbox-"
    # /health/ready fails while this process's feed is more events than this behind the log.
    ready_max_lag: Count = 1000
    # Seconds between sweeps for due expiries and terminated partners; 0 turns the sweeps off.
    scheduler_interval: Interval = 1.0
    # Seconds between checkpoints of the tamper-evident log; 0 turns them off.
    checkpoint_interval: Interval = 10.0
    nats_subject_prefix: Text = "consent.v1"
    # Seconds a rotated partner credential keeps working beside its replacement.
    credential_overlap: Annotated[int, Bounds(at_least=0, unit="seconds")] = 3600
    # End-user tokens from an identity provider: RS256/ES256, verified against its JWKS (a URL or a file).
    user_jwks_url: str | None = None
    user_token_issuer: str | None = None
    user_token_audience: str | None = None
    user_token_leeway: Interval = 30.0  # seconds of clock skew allowed on exp, nbf and iat
    user_jwks_cache_seconds: Interval = 300.0
    user_jwks_min_refetch_seconds: Interval = 10.0  # however many unknown key ids arrive
    # Exact browser origins allowed to call the API; empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    # The service's public base URL as partners reach it (https://consent.example): the `issuer` of the OAuth
    # metadata (GET /.well-known/oauth-authorization-server) and the base of its endpoints. Unset: each
    # request's own base URL, which behind a proxy may not be the public one.
    public_url: str | None = None
    max_body_bytes: Annotated[int, Bounds(at_least=1, unit="bytes")] = 1_048_576
    # HMAC key of pairwise pseudonyms; replicas must share it. Unset: no partner may be pairwise.
    # At least MIN_KEY_LENGTH characters: a short key could be found from a few known (subject, pseudonym) pairs.
    pseudonym_key: Annotated[str | None, Bounds(at_least=MIN_KEY_LENGTH, secret=True)] = None
    # Consent receipts: a JWKS of Ed25519 private keys (the first signs), inline (a value starting with `{`)
    # or the path of a file; replicas must share it. Unset: a key generated per process. Issuer unset: the
    # event source.
    receipt_keys: Secret = None
    receipt_issuer: str | None = None
    receipt_jurisdiction: str | None = None
    controller_name: Text = "Platform operator"
    controller_contact: str | None = None
    # Wraps subjects' data keys (base64 of 32 bytes); replicas must share it. Unset: on SQLite a key file
    # beside the database, on PostgreSQL no evidence is accepted (consent/adapters/master_key.py).
    master_key: Secret = None
    # Earlier master keys, still read (base64, comma-separated) until `consent keys rewrap` has run.
    master_keys_old: Annotated[tuple[str, ...], Bounds(secret=True)] = ()
    # On PostgreSQL, start without the keys that replicas share (SHARED_KEYS): each process makes up its own
    # token and receipt keys, and no evidence is accepted. For trying things out, never for production.
    allow_ephemeral_keys: bool = False
    # Log lines: "json", "text", or "auto" (JSON unless stderr is a terminal); set by `consent serve`.
    log_format: Literal["auto", "json", "text"] = "auto"
    # One access line a request (consent/api/observability.py); off spares the hot path its cost.
    access_log: bool = True
    # Seconds between flushes of this process's per-partner counts to the database (partner health); 0 = off.
    metrics_flush_interval: Interval = 5.0
    # The privacy center (consent/api/privacy_center.py): how long an entry link and a browser session last,
    # and who may frame its pages (the CSP `frame-ancestors` sources; 'none': no one).
    privacy_center_link_ttl: Seconds = 300
    privacy_center_session_ttl: Seconds = 1800
    privacy_center_frame_ancestors: Text = "'none'"
    # Webhooks (docs/webhooks.md): seconds before each retry (the last one failing makes a delivery dead),
    # http:// URLs (tests, a local receiver), `host[:port]` allowed despite resolving to a private address,
    # and how many days before a partner's contract ends its `partner.contract_ending` notice goes out.
    webhook_retry_schedule: tuple[str, ...] = ("5", "30", "120", "600", "1800", "7200", "21600", "43200", "86400")
    webhook_allow_http: bool = False
    webhook_allowed_hosts: tuple[str, ...] = ()
    webhook_contract_notice_days: Annotated[int, Bounds(at_least=0, unit="days")] = 30
    # Days a delivered delivery stays in the ledger after its last attempt (dead and undelivered ones stay).
    webhook_ledger_days: Annotated[int, Bounds(at_least=1, unit="days")] = 30

    def __post_init__(self) -> None:
        for field in _FIELDS:
            check(field, getattr(self, field.name))
        if not _DATABASE_URL.fullmatch(self.database_url):
            raise SettingsError("CONSENT_DATABASE_URL must be a SQLAlchemy URL postgresql+asyncpg://... "
                                "or sqlite+aiosqlite:///...")
        # Refuse to start on settings that would accept the wrong tokens or origins without saying so.
        if self.user_jwks_url is not None:
            if not (self.user_token_issuer and self.user_token_audience):
                raise SettingsError("CONSENT_USER_JWKS_URL needs CONSENT_USER_TOKEN_ISSUER and "
                                    "CONSENT_USER_TOKEN_AUDIENCE: tokens of any issuer or audience would pass")
            if "://" in self.user_jwks_url and not self.user_jwks_url.startswith(("https://", "http://", "file://")):
                raise SettingsError("CONSENT_USER_JWKS_URL must be an https://, http:// or file:// URL or a file path")
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise SettingsError(f"CONSENT_CORS_ORIGINS: {origin!r} is not an exact origin like https://app.example")
        if self.public_url is not None and not _PUBLIC_URL.fullmatch(self.public_url):
            raise SettingsError("CONSENT_PUBLIC_URL must be an absolute http(s) URL without query or fragment, "
                                "like https://consent.example")
        try:
            if self.master_key is not None:
                decode_master_key(self.master_key, "CONSENT_MASTER_KEY")
            for old in self.master_keys_old:
                decode_master_key(old, "CONSENT_MASTER_KEYS_OLD")
            if self.receipt_keys is not None and is_inline(self.receipt_keys):
                parse_key_set(self.receipt_keys, "CONSENT_RECEIPT_KEYS")
        except ValueError as error:
            raise SettingsError(str(error)) from None
        if self.webhook_sender != "inline" and self.embedded:
            raise SettingsError("CONSENT_WEBHOOK_SENDER=process or off needs PostgreSQL: the embedded SQLite "
                                "file has one writer, this process")
        if not self.webhook_retry_schedule or not all(_SECONDS.fullmatch(d) for d in self.webhook_retry_schedule):
            raise SettingsError("CONSENT_WEBHOOK_RETRY_SCHEDULE must be a comma-separated list of seconds, "
                                "like 5,30,120")

    def missing_shared_keys(self) -> list[str]:
        """The variables of SHARED_KEYS that are unset where every replica needs them: on PostgreSQL,
        unless CONSENT_ALLOW_EPHEMERAL_KEYS is on."""
        if self.embedded:
            return []
        return [env_variable(name) for name in SHARED_KEYS if getattr(self, name) is None]

    def require_shared_keys(self) -> None:
        """Refuse to start on PostgreSQL without the keys replicas share, unless explicitly allowed."""
        missing = self.missing_shared_keys()
        if missing and not self.allow_ephemeral_keys:
            raise SettingsError(
                f"{', '.join(missing)} not set: on PostgreSQL every replica needs the same keys. Generate them "
                "with `consent keys init` (e.g. `consent keys init --write .env`), or set "
                "CONSENT_ALLOW_EPHEMERAL_KEYS=1 to try the service with keys of this process only")

    def __repr__(self) -> str:
        """Secrets masked: settings end up in tracebacks and test reports."""
        shown = []
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if name == "database_url":  # declared secret for its password; the rest says where it points
                value = _PASSWORD_IN_URL.sub(r"\1***@", value)
            elif name in SECRET_FIELDS and value:
                value = "***"
            shown.append(f"{name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Each field from its CONSENT_ variable; unset or empty leaves the default. SettingsError on a bad value."""
        env = os.environ if env is None else env
        given = {field.name: parse(field, env[field.variable]) for field in _FIELDS
                 if env.get(field.variable, "").strip()}
        return cls(**given)


_FIELDS = fields_of(Settings)
# Keys every replica on one PostgreSQL database must share (`consent keys init` makes a set).
SHARED_KEYS = ("master_key", "token_signing_key", "receipt_keys", "pseudonym_key")
SECRET_FIELDS = frozenset(field.name for field in _FIELDS if field.bounds.secret)
_PASSWORD_IN_URL = re.compile(r"(://[^:/@]*:)[^@]*@")
