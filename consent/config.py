"""Settings from the environment (API.md "Configuration")."""

from __future__ import annotations

import os

from msgspec import Struct

EMBEDDED_DATABASE_URL = "sqlite+aiosqlite:///./consent.db"


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
    # POST /v1/decisions answered by a thin ASGI layer (consent/api/fast_decisions.py).
    fast_decisions: bool = True
    nats_stream: str = "CONSENT"
    # Subjects a partner in the sandbox may ask about: test data only.
    sandbox_subject_prefix: str = "sandbox-"
    # /health/ready fails while this process's feed is more events than this behind the log.
    ready_max_lag: int = 1000
    # Seconds between sweeps for due expiries and terminated partners; 0 turns the sweeps off.
    scheduler_interval: float = 1.0
    nats_subject_prefix: str = "consent.v1"

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
            fast_decisions=env.get("CONSENT_FAST_DECISIONS", "1") != "0",
            nats_stream=env.get("CONSENT_NATS_STREAM", "CONSENT"),
            sandbox_subject_prefix=env.get("CONSENT_SANDBOX_SUBJECT_PREFIX", "sandbox-"),
            ready_max_lag=int(env.get("CONSENT_READY_MAX_LAG", "1000")),
            scheduler_interval=float(env.get("CONSENT_SCHEDULER_INTERVAL", "1")),
            nats_subject_prefix=env.get("CONSENT_NATS_SUBJECT_PREFIX", "consent.v1"),
        )
