"""Settings from the environment (API.md "Configuration")."""

from __future__ import annotations

import os
import re

from msgspec import Struct

from consent.adapters.cipher import decode_master_key
from consent.domain.pseudonyms import MIN_KEY_LENGTH

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./consent.db"
# What a browser sends as Origin: scheme, lower-case host and optional port; no path, no wildcard.
_ORIGIN = re.compile(r"https?://([a-z0-9-]+(\.[a-z0-9-]+)*|\[[0-9a-f:.]+\])(:[0-9]{1,5})?")


class Settings(Struct, frozen=True):
    database_url: str = EMBEDDED_DATABASE_URL
    nats_url: str | None = None
    admin_keys: tuple[str, ...] = ()
    user_token_secret: str | None = None
    token_ttl: int = 900
    partner_rate_limit: int = 1000
    event_source: str = "/consent"
    # Signs partner access tokens; replicas must share it. Unset: a random key per process.
    token_signing_key: str | None = None
    subject_cache_size: int = 100_000
    # Subjects whose last write here is remembered, so that their next write skips its read (~1 KB each).
    write_cache_size: int = 10_000
    # POST /v1/decisions answered by a thin ASGI layer (consent/api/fast_decisions.py).
    fast_decisions: bool = True
    # POST /v1/subjects/{id}/consents answered by a thin ASGI layer (consent/api/fast_consents.py).
    fast_writes: bool = True
    nats_stream: str = "CONSENT"
    # Where the outbox relay runs: "inline" (this process's event loop), "process" (a child process
    # that `consent serve` supervises) or "off" (none here: run `consent relay` apart).
    relay: str = "inline"
    # Subjects a partner in the sandbox may ask about: test data only.
    sandbox_subject_prefix: str = "sandbox-"
    # /health/ready fails while this process's feed is more events than this behind the log.
    ready_max_lag: int = 1000
    # Seconds between sweeps for due expiries and terminated partners; 0 turns the sweeps off.
    scheduler_interval: float = 1.0
    # Seconds between checkpoints of the tamper-evident log; 0 turns them off.
    checkpoint_interval: float = 10.0
    nats_subject_prefix: str = "consent.v1"
    # Seconds a rotated partner credential keeps working beside its replacement.
    credential_overlap: int = 3600
    # End-user tokens from an identity provider: RS256/ES256, verified against its JWKS (a URL or a file).
    user_jwks_url: str | None = None
    user_token_issuer: str | None = None
    user_token_audience: str | None = None
    user_token_leeway: float = 30.0  # seconds of clock skew allowed on exp, nbf and iat
    user_jwks_cache_seconds: float = 300.0
    user_jwks_min_refetch_seconds: float = 10.0  # however many unknown key ids arrive
    # Exact browser origins allowed to call the API; empty: no CORS headers at all.
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 1_048_576
    # HMAC key of pairwise pseudonyms; replicas must share it. Unset: no partner may be pairwise.
    pseudonym_key: str | None = None
    # Consent receipts: a JWKS file of Ed25519 private keys (the first signs); replicas must share it.
    # Unset: a key generated per process. Issuer unset: the event source.
    receipt_keys: str | None = None
    receipt_issuer: str | None = None
    receipt_jurisdiction: str | None = None
    controller_name: str = "Platform operator"
    controller_contact: str | None = None
    # Wraps subjects' data keys (base64 of 32 bytes); replicas must share it. Unset: on SQLite a key file
    # beside the database, on PostgreSQL no evidence is accepted (consent/adapters/master_key.py).
    master_key: str | None = None
    # Earlier master keys, still read (base64, comma-separated) until `consent keys rewrap` has run.
    master_keys_old: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Refuse to start on settings that would accept the wrong tokens or origins without saying so.
        if self.user_jwks_url is not None:
            if not (self.user_token_issuer and self.user_token_audience):
                raise ValueError("CONSENT_USER_JWKS_URL needs CONSENT_USER_TOKEN_ISSUER and "
                                 "CONSENT_USER_TOKEN_AUDIENCE: tokens of any issuer or audience would pass")
            if "://" in self.user_jwks_url and not self.user_jwks_url.startswith(("https://", "http://", "file://")):
                raise ValueError("CONSENT_USER_JWKS_URL must be an https://, http:// or file:// URL or a file path")
        for origin in self.cors_origins:
            if not _ORIGIN.fullmatch(origin):
                raise ValueError(f"CONSENT_CORS_ORIGINS: {origin!r} is not an exact origin like https://app.example")
        if self.relay not in ("inline", "process", "off"):
            raise ValueError(f"CONSENT_RELAY must be inline, process or off, not {self.relay!r}")
        if self.max_body_bytes < 1 or self.user_token_leeway < 0:
            raise ValueError("CONSENT_MAX_BODY_BYTES must be positive and CONSENT_USER_TOKEN_LEEWAY not negative")
        if self.pseudonym_key is not None and len(self.pseudonym_key) < MIN_KEY_LENGTH:
            # A short key could be found from a few known (subject, pseudonym) pairs.
            raise ValueError(f"CONSENT_PSEUDONYM_KEY must be at least {MIN_KEY_LENGTH} characters")
        if self.master_key is not None:
            decode_master_key(self.master_key, "CONSENT_MASTER_KEY")
        for old in self.master_keys_old:
            decode_master_key(old, "CONSENT_MASTER_KEYS_OLD")

    @property
    def embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        return cls(
            database_url=env.get("CONSENT_DATABASE_URL") or EMBEDDED_DATABASE_URL,
            nats_url=env.get("CONSENT_NATS_URL") or None,
            admin_keys=tuple(k.strip() for k in env.get("CONSENT_ADMIN_KEYS", "").split(",") if k.strip()),
            user_token_secret=env.get("CONSENT_USER_TOKEN_SECRET") or None,
            token_ttl=int(env.get("CONSENT_TOKEN_TTL", "900")),
            partner_rate_limit=int(env.get("CONSENT_PARTNER_RATE_LIMIT", "1000")),
            event_source=env.get("CONSENT_EVENT_SOURCE", "/consent"),
            token_signing_key=env.get("CONSENT_TOKEN_SIGNING_KEY") or None,
            subject_cache_size=int(env.get("CONSENT_SUBJECT_CACHE_SIZE", "100000")),
            write_cache_size=int(env.get("CONSENT_WRITE_CACHE_SIZE", "10000")),
            fast_decisions=env.get("CONSENT_FAST_DECISIONS", "1") != "0",
            fast_writes=env.get("CONSENT_FAST_WRITES", "1") != "0",
            nats_stream=env.get("CONSENT_NATS_STREAM", "CONSENT"),
            relay=env.get("CONSENT_RELAY") or "inline",
            sandbox_subject_prefix=env.get("CONSENT_SANDBOX_SUBJECT_PREFIX", "sandbox-"),
            pseudonym_key=env.get("CONSENT_PSEUDONYM_KEY") or None,
            ready_max_lag=int(env.get("CONSENT_READY_MAX_LAG", "1000")),
            scheduler_interval=float(env.get("CONSENT_SCHEDULER_INTERVAL", "1")),
            checkpoint_interval=float(env.get("CONSENT_CHECKPOINT_INTERVAL", "10")),
            nats_subject_prefix=env.get("CONSENT_NATS_SUBJECT_PREFIX", "consent.v1"),
            credential_overlap=int(env.get("CONSENT_CREDENTIAL_OVERLAP", "3600")),
            user_jwks_url=env.get("CONSENT_USER_JWKS_URL") or None,
            user_token_issuer=env.get("CONSENT_USER_TOKEN_ISSUER") or None,
            user_token_audience=env.get("CONSENT_USER_TOKEN_AUDIENCE") or None,
            user_token_leeway=float(env.get("CONSENT_USER_TOKEN_LEEWAY", "30")),
            user_jwks_cache_seconds=float(env.get("CONSENT_USER_JWKS_CACHE_SECONDS", "300")),
            user_jwks_min_refetch_seconds=float(env.get("CONSENT_USER_JWKS_MIN_REFETCH_SECONDS", "10")),
            cors_origins=tuple(o.strip() for o in env.get("CONSENT_CORS_ORIGINS", "").split(",") if o.strip()),
            max_body_bytes=int(env.get("CONSENT_MAX_BODY_BYTES", "1048576")),
            receipt_keys=env.get("CONSENT_RECEIPT_KEYS") or None,
            receipt_issuer=env.get("CONSENT_RECEIPT_ISSUER") or None,
            receipt_jurisdiction=env.get("CONSENT_RECEIPT_JURISDICTION") or None,
            controller_name=env.get("CONSENT_CONTROLLER_NAME") or "Platform operator",
            controller_contact=env.get("CONSENT_CONTROLLER_CONTACT") or None,
            master_key=env.get("CONSENT_MASTER_KEY") or None,
            master_keys_old=tuple(k.strip() for k in env.get("CONSENT_MASTER_KEYS_OLD", "").split(",") if k.strip()),
        )
