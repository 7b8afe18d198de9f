"""Table definitions. Every change here comes with an Alembic migration in migrations/."""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import base as _  # noqa: F401 - postgresql.base below

metadata = sa.MetaData(naming_convention={
    "pk": "pk_%(table_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ix": "ix_%(table_name)s_%(column_0_name)s",
})

Json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
Position = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class TransactionId(sa.types.UserDefinedType):
    """PostgreSQL's 64-bit transaction id (xid8); SQLite, a single writer, needs none."""

    cache_ok = True

    def get_col_spec(self, **_kw: object) -> str:
        return "xid8"


postgresql.base.ischema_names["xid8"] = TransactionId  # so that reflection knows the type


class UTCDateTime(sa.TypeDecorator):
    """Timestamps always leave the database as aware UTC datetimes (SQLite keeps no zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


# The log: append-only. `position` is global, `stream_version` counts within one stream.
events = sa.Table(
    "events", metadata,
    sa.Column("position", Position, sa.Identity(always=False), primary_key=True),
    sa.Column("event_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column("stream_id", sa.String(200), nullable=False),
    sa.Column("stream_version", sa.Integer(), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", Json, nullable=False),
    sa.Column("metadata", Json, nullable=False),
    sa.Column("recorded_at", UTCDateTime(), nullable=False),
    # The writing transaction, so that the relay can read in commit-safe order (see nats_relay).
    # On PostgreSQL the column defaults to pg_current_xact_id() (set by the migration).
    sa.Column("transaction_id", TransactionId().with_variant(sa.BigInteger(), "sqlite"), nullable=True),
    # sha256 chained to the previous event of the stream (consent.domain.hash_chain).
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.UniqueConstraint("stream_id", "stream_version", name="uq_events_stream_version"),
    sa.Index("ix_events_transaction_id", "transaction_id", "position"),
    # GET /v1/audit: what an administrator or a partner did (not the subjects' own choices, not the service's).
    sa.Index("ix_events_audit", "position", postgresql_where=sa.text(
        "(metadata ->> 'actor') NOT IN ('subject', 'system')"), sqlite_where=sa.text(
        "json_extract(metadata, '$.actor') NOT IN ('subject', 'system')")),
    sqlite_autoincrement=True,  # positions are never reused
)

# Checkpoints over the global sequence: each chains to the previous one over (position, event hash)
# of every event up to `up_to_position`, so a deleted, inserted or truncated row is detected.
event_checkpoints = sa.Table(
    "event_checkpoints", metadata,
    sa.Column("up_to_position", Position, primary_key=True, autoincrement=False),
    sa.Column("event_count", sa.Integer(), nullable=False),
    sa.Column("hash", sa.LargeBinary(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Read models, updated in the same transaction as the append.
subjects = sa.Table(
    "subjects", metadata,
    sa.Column("subject_id", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("position", Position, nullable=False),
    sa.Column("global_opt_out", sa.Boolean(), nullable=False),
)

consents = sa.Table(
    "consents", metadata,
    sa.Column("subject_id", sa.String(128), primary_key=True),
    sa.Column("purpose_id", sa.String(64), primary_key=True),
    # '' is a first-party choice (partner null in the API): key columns cannot be NULL.
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("scopes", Json, nullable=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=True),
    sa.Column("purpose_version", sa.Integer(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # For the scheduler: grants falling due, and grants to a terminated partner.
    sa.Index("ix_consents_due", "expires_at", postgresql_where=sa.text("status = 'granted'"),
             sqlite_where=sa.text("status = 'granted'")),
    sa.Index("ix_consents_partner_id", "partner_id"),
    # For the impact of a catalog change (consent/adapters/sql_impact.py): active grants of a purpose by the
    # version they were given to, answered from the index alone on PostgreSQL.
    sa.Index("ix_consents_granted_purpose", "purpose_id", "purpose_version",
             postgresql_where=sa.text("status = 'granted'"), sqlite_where=sa.text("status = 'granted'"),
             postgresql_include=["subject_id", "partner_id", "expires_at"]),
)

purposes = sa.Table(
    "purposes", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("legal_basis", sa.String(32), nullable=False),
    sa.Column("retention", sa.String(64), nullable=False),
    sa.Column("sale_or_sharing", sa.Boolean(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("reconsent_below", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("stream_version", sa.Integer(), nullable=False),
)

scopes = sa.Table(
    "scopes", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("title", sa.Text(), nullable=False),
    sa.Column("description", sa.Text(), nullable=False),
    sa.Column("sensitivity", sa.String(16), nullable=False),
    sa.Column("stream_version", sa.Integer(), nullable=False),
)

partners = sa.Table(
    "partners", metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("base_status", sa.String(16), nullable=False),
    sa.Column("data_uses", Json, nullable=False),
    sa.Column("contract_ends_at", UTCDateTime(), nullable=True),
    sa.Column("stream_version", sa.Integer(), nullable=False),
    # `public` or `pairwise` (the partner knows subjects by pseudonyms only).
    sa.Column("identifiers", sa.String(16), nullable=False, server_default="public"),
    sa.Column("rate_limit", sa.Integer(), nullable=True),
)

# Which subject each issued pairwise pseudonym stands for: HMAC cannot be inverted. Written when a
# pseudonym is issued or a subject event concerning the partner is appended; never changes.
# Not a projection of the log alone (issuing is not an event), so a rebuild leaves it alone.
pseudonyms = sa.Table(
    "pseudonyms", metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("pseudonym", sa.String(128), primary_key=True),
    sa.Column("subject_id", sa.String(128), nullable=False, index=True),
)

# Each subject's data key, which seals the personal fields of its events (consent/adapters/subject_keys.py),
# wrapped by the master key named by `master_key_id`. Erasing the subject deletes the row: what the key
# sealed is unreadable from then on, while the events themselves never change.
subject_keys = sa.Table(
    "subject_keys", metadata,
    sa.Column("subject_id", sa.String(128), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),  # named in every value the key sealed
    sa.Column("wrapped_key", sa.LargeBinary(64), nullable=False),
    sa.Column("master_key_id", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# First answers to requests that carried an Idempotency-Key.
idempotency_keys = sa.Table(
    "idempotency_keys", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("response", Json, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Partner client credentials; the secret is kept only as an argon2 hash.
partner_credentials = sa.Table(
    "partner_credentials", metadata,
    sa.Column("client_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False, index=True),
    sa.Column("secret_hash", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # OAuth scopes its tokens may carry (API: PARTNER_SCOPES); NULL = all of them.
    sa.Column("scopes", Json, nullable=True),
    # Set when a rotation leaves the credential an overlap: not valid from then on.
    sa.Column("expires_at", UTCDateTime(), nullable=True),
)

# Access tokens a partner revoked before their expiry (RFC 7009); kept until they expire.
revoked_tokens = sa.Table(
    "revoked_tokens", metadata,
    sa.Column("token_id", sa.String(64), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False, index=True),
)

# How far the relay has published the log to NATS.
relay_checkpoints = sa.Table(
    "relay_checkpoints", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("transaction_id", sa.BigInteger(), nullable=False),
    sa.Column("position", sa.BigInteger(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# Each partner's traffic by the minute, summed over every replica: each process adds what it counted since
# its last flush (consent/adapters/partner_health_store.py). `metric` is decision, denial, violation,
# request, latency (requests by latency bucket) or latency_us (their total, in microseconds); `label`
# the outcome, reason, kind, status class or bucket. GET /v1/partners/{id}/health sums a window of it.
partner_health = sa.Table(
    "partner_health", metadata,
    sa.Column("partner_id", sa.String(64), primary_key=True),
    sa.Column("bucket_start", UTCDateTime(), primary_key=True),
    sa.Column("metric", sa.String(16), primary_key=True),
    sa.Column("label", sa.String(32), primary_key=True),
    sa.Column("n", sa.BigInteger(), nullable=False),
    sa.Index("ix_partner_health_bucket_start", "bucket_start"),  # pruning the oldest
)

# The privacy center (consent/app/privacy_center.py): single-use entry links and browser sessions, each
# kept only as the SHA-256 of its random value, in the database so that every replica honours them.
privacy_center_links = sa.Table(
    "privacy_center_links", metadata,
    sa.Column("code_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime(), nullable=True),
    sa.Index("ix_privacy_center_links_expires_at", "expires_at"),  # pruning
)

privacy_center_sessions = sa.Table(
    "privacy_center_sessions", metadata,
    sa.Column("session_hash", sa.LargeBinary(32), primary_key=True),
    sa.Column("subject_id", sa.String(200), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_privacy_center_sessions_subject_id", "subject_id"),  # an erasure ends them all
)

# Partners' webhook endpoints (consent/app/webhooks.py). The signing secret is sealed by the master key
# (consent/adapters/cipher.py, `MasterKeys.seal`), bound to the webhook's id; after a rotation the previous
# one keeps signing beside it until `previous_valid_until`.
webhooks = sa.Table(
    "webhooks", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("partner_id", sa.String(64), nullable=False, index=True),
    sa.Column("url", sa.Text(), nullable=False),
    sa.Column("events", Json, nullable=True),  # event types it wants; NULL: every type that reaches it
    sa.Column("description", sa.Text(), nullable=True),
    sa.Column("enabled", sa.Boolean(), nullable=False),
    sa.Column("secret", sa.LargeBinary(), nullable=False),
    sa.Column("previous_secret", sa.LargeBinary(), nullable=True),
    sa.Column("previous_valid_until", UTCDateTime(), nullable=True),
    sa.Column("master_key_id", sa.String(32), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
)

# The delivery ledger: one row per event a webhook is to receive, written with the dispatcher's cursor
# (relay_checkpoints, name `webhooks`) in one transaction, before any attempt. `ordering_key` is the
# subject's stream, or `partner:<id>` for catalog notices: per webhook and key, deliveries go in position order.
webhook_deliveries = sa.Table(
    "webhook_deliveries", metadata,
    sa.Column("id", Position, sa.Identity(always=False), primary_key=True),
    sa.Column("webhook_id", sa.String(40), sa.ForeignKey("webhooks.id", ondelete="CASCADE",
                                                         name="fk_webhook_deliveries_webhook_id"), nullable=False),
    sa.Column("event_id", sa.Uuid(), nullable=False),
    sa.Column("position", Position, nullable=False),
    sa.Column("ordering_key", sa.String(200), nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("body", sa.LargeBinary(), nullable=False),  # the CloudEvent JSON, as it is sent every time
    sa.Column("status", sa.String(16), nullable=False),  # pending, delivered, failed (to retry), dead
    sa.Column("attempts", Json, nullable=False),  # [{at, status | error, duration_ms}]
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    # The worker's claim: due deliveries still to send; and each webhook's ledger, newest first.
    sa.Index("ix_webhook_deliveries_due", "next_attempt_at", postgresql_where=sa.text(
        "status IN ('pending', 'failed')"), sqlite_where=sa.text("status IN ('pending', 'failed')")),
    sa.Index("ix_webhook_deliveries_ordering", "webhook_id", "ordering_key", "position"),
    sqlite_autoincrement=True,
)
