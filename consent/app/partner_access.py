"""Partner credentials and short-lived access tokens (OAuth 2.0 client credentials, RFC 6749 §4.4).

The secret is shown once and kept only as an argon2 hash. Access tokens are JWTs
signed by this service and carry OAuth scopes; every request re-checks that the
token was not revoked (RFC 7009), that its credential is still valid and that its
partner may act, so revocation takes effect at once. Credential and token changes
are events: other replicas learn of them from the feed within its propagation bound.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Protocol

import anyio.to_thread
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from msgspec import Struct

from consent.app.ports import Clock, EventBus, RecordedEvent
from consent.app.telemetry import note_partner
from consent.domain.catalog import Catalog
from consent.domain.decision import partner_inactive
from consent.domain.errors import Conflict, DomainError, NotFound
from consent.domain.events import CredentialIssued, CredentialRevoked, PartnerTerminated, TokenRevoked

TOKEN_ISSUER = "consent"
TOKEN_KID = "consent-partner"  # tells partner tokens from end-user tokens before verifying
# What a partner token may be used for. A credential may be limited to some of them.
PARTNER_SCOPE_DESCRIPTIONS = {
    "decisions:read": "POST /v1/decisions and /v1/decisions/batch",
    "permissions:read": "GET /v1/subjects/{subject_id}/permissions",
    "catalog:read": "read purposes, scopes and the partner's own record",
}
PARTNER_SCOPES = tuple(PARTNER_SCOPE_DESCRIPTIONS)
# Scopes a credential carries only when asked for by name: existing credentials (scopes NULL: all of
# PARTNER_SCOPES) do not gain the right to change anything.
OPT_IN_SCOPE_DESCRIPTIONS = {
    "webhooks:manage": "register, change and inspect the partner's own webhooks and their deliveries",
}
ALL_SCOPES = PARTNER_SCOPES + tuple(OPT_IN_SCOPE_DESCRIPTIONS)
CLIENT_ID_MAX, CLIENT_SECRET_MAX = 64, 256  # longer ones are no credential of this service
_hasher = PasswordHasher()
# Verified against when the client id is unknown, so that the answer takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
REVOKED_LIMIT = 100_000  # revoked token ids remembered in memory, each until its token expires


class StoredCredential(Struct, frozen=True):
    client_id: str
    partner_id: str
    secret_hash: str
    scopes: tuple[str, ...] | None  # None: every partner scope (credentials issued before scopes existed)
    expires_at: datetime | None = None

    @property
    def allowed_scopes(self) -> tuple[str, ...]:
        return PARTNER_SCOPES if self.scopes is None else self.scopes


class CredentialStore(Protocol):
    async def add(self, credential: StoredCredential, event: CredentialIssued, actor: str) -> list[RecordedEvent]: ...

    async def find_active(self, client_id: str, now: datetime) -> StoredCredential | None: ...

    async def end(self, event: CredentialRevoked, actor: str) -> list[RecordedEvent]: ...

    async def revoke_all(self, partner_id: str, now: datetime) -> list[str]: ...

    async def revoke_token(self, event: TokenRevoked, actor: str) -> list[RecordedEvent]: ...

    async def revoked_token_ids(self, now: datetime) -> dict[str, datetime]: ...


class IssuedCredential(Struct):
    client_id: str
    client_secret: str
    scopes: list[str]
    replaces: str | None = None
    # When the credential this one replaces stops working (rotation only).
    replaced_valid_until: datetime | None = None


class AccessToken(Struct):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class TokenRefused(Exception):
    """An RFC 6749 §5.2 error: `error` is its code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class TokenClaims(Struct, frozen=True):
    partner_id: str
    client_id: str
    expires: float
    token_id: str
    scopes: frozenset[str]


def check_scopes(requested: list[str] | None, allowed: tuple[str, ...] = ALL_SCOPES) -> tuple[str, ...]:
    """The scopes asked for, all known and within `allowed`; none asked = PARTNER_SCOPES (no opt-in scope)."""
    if requested is None:
        return PARTNER_SCOPES
    unknown = sorted(set(requested) - set(allowed))
    if unknown or not requested:
        raise DomainError("validation_failed", f"scopes must be a non-empty subset of {list(allowed)}")
    return tuple(s for s in ALL_SCOPES if s in requested)


class PartnerAccess:
    def __init__(self, store: CredentialStore, catalog: Callable[[], Catalog], clock: Clock,
                 signing_key: str, token_ttl: int, bus: EventBus, rotation_overlap: int = 3600) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._signing_key = signing_key
        self._token_ttl = token_ttl
        self._bus = bus
        self._rotation_overlap = timedelta(seconds=rotation_overlap)
        # Credentials known to be valid; filled on use, emptied by revocation events (local or from the feed).
        self._active: dict[str, StoredCredential] = {}
        # Token id -> expiry of tokens revoked before they expired.
        self._revoked: dict[str, datetime] = {}

    async def start(self) -> None:
        self._revoked.update(await self._store.revoked_token_ids(self._clock.now()))

    async def create_credential(self, partner_id: str, scopes: list[str] | None, actor: str,
                                replaces: str | None = None) -> IssuedCredential:
        partner = self._catalog().partner(partner_id)
        if partner.status == "terminated":
            raise Conflict("partner_terminated", f"partner {partner_id!r} is terminated")
        granted = check_scopes(scopes)
        client_id = f"cl_{secrets.token_urlsafe(12)}"
        secret = secrets.token_urlsafe(32)
        secret_hash = await anyio.to_thread.run_sync(_hasher.hash, secret)
        credential = StoredCredential(client_id=client_id, partner_id=partner_id, secret_hash=secret_hash,
                                      scopes=granted)
        event = CredentialIssued(occurred_at=self._clock.now(), partner_id=partner_id, client_id=client_id,
                                 scopes=granted, replaces=replaces)
        await self._publish(await self._store.add(credential, event, actor))
        self._active[client_id] = credential
        return IssuedCredential(client_id=client_id, client_secret=secret, scopes=list(granted))

    async def rotate_credential(self, partner_id: str, client_id: str, actor: str) -> IssuedCredential:
        """A new credential with the same scopes; the old one keeps working for the overlap, then not."""
        old = await self._store.find_active(client_id, self._clock.now())
        if old is None or old.partner_id != partner_id:
            raise NotFound("credential", client_id)
        issued = await self.create_credential(partner_id, list(old.allowed_scopes), actor, replaces=client_id)
        now = self._clock.now()
        valid_until = min(now + self._rotation_overlap, old.expires_at or datetime.max.replace(tzinfo=UTC))
        await self._end(CredentialRevoked(occurred_at=now, partner_id=partner_id, client_id=client_id,
                                          effective_at=valid_until, reason="rotated"), actor)
        issued.replaces, issued.replaced_valid_until = client_id, valid_until
        return issued

    async def revoke_credential(self, partner_id: str, client_id: str, actor: str) -> None:
        self._catalog().partner(partner_id)
        now = self._clock.now()
        ended = await self._end(CredentialRevoked(occurred_at=now, partner_id=partner_id, client_id=client_id,
                                                  effective_at=now), actor)
        if not ended:
            raise NotFound("credential", client_id)

    async def _end(self, event: CredentialRevoked, actor: str) -> bool:
        recorded = await self._store.end(event, actor)
        self._active.pop(event.client_id, None)
        await self._publish(recorded)
        return bool(recorded)

    async def _publish(self, recorded: list[RecordedEvent]) -> None:
        if recorded:
            await self._bus.publish(recorded)

    async def on_events(self, events: list[RecordedEvent]) -> None:
        """From this process's bus and from the feed: forget what was revoked anywhere."""
        for item in events:
            event = item.event
            if isinstance(event, CredentialRevoked):
                self._active.pop(event.client_id, None)
            elif isinstance(event, TokenRevoked):
                self._remember_revoked(event.token_id, event.expires_at)
            elif isinstance(event, PartnerTerminated):
                # Terminating a partner revokes every credential it holds.
                for client_id in await self._store.revoke_all(event.partner_id, self._clock.now()):
                    self._active.pop(client_id, None)

    async def issue_token(self, grant_type: str | None, client_id: str | None, client_secret: str | None,
                          scope: str | None = None) -> AccessToken:
        if grant_type != "client_credentials":
            raise TokenRefused("unsupported_grant_type" if grant_type else "invalid_request",
                               "grant_type must be client_credentials")
        credential = await self._authenticate_client(client_id, client_secret)
        partner = self._catalog().partners.get(credential.partner_id)
        if partner is None or partner_inactive(partner, self._clock.now()):
            raise TokenRefused("invalid_client", "the partner is not active", status=401)
        scopes = credential.allowed_scopes
        if scope is not None:
            requested = scope.split()
            if not requested or not set(requested) <= set(scopes):
                raise TokenRefused("invalid_scope", f"scope must be a subset of {' '.join(scopes)!r}")
            scopes = tuple(s for s in scopes if s in requested)
        self._active[credential.client_id] = credential
        issued = int(time.time())
        token = jwt.encode(
            {"iss": TOKEN_ISSUER, "sub": credential.partner_id, "cid": credential.client_id, "iat": issued,
             "exp": issued + self._token_ttl, "jti": secrets.token_urlsafe(16), "scope": " ".join(scopes)},
            self._signing_key, algorithm="HS256", headers={"kid": TOKEN_KID})
        return AccessToken(access_token=token, token_type="Bearer", expires_in=self._token_ttl,
                           scope=" ".join(scopes))

    async def revoke_token(self, client_id: str | None, client_secret: str | None, token: str | None) -> None:
        """RFC 7009 §2: an invalid or expired token needs no revoking and is not an error."""
        if not token or len(token) > 4096:
            raise TokenRefused("invalid_request", "token is required")
        credential = await self._authenticate_client(client_id, client_secret)
        claims = self.verify_token(token)
        if claims is None:
            return
        if claims.client_id != credential.client_id:
            raise TokenRefused("unauthorized_client", "the token was not issued to this client")
        expires_at = datetime.fromtimestamp(claims.expires, UTC)
        event = TokenRevoked(occurred_at=self._clock.now(), partner_id=claims.partner_id,
                             client_id=claims.client_id, token_id=claims.token_id, expires_at=expires_at)
        self._remember_revoked(claims.token_id, expires_at)
        await self._publish(await self._store.revoke_token(event, f"partner:{claims.partner_id}"))

    async def _authenticate_client(self, client_id: str | None, client_secret: str | None) -> StoredCredential:
        if (not client_id or not client_secret or len(client_id) > CLIENT_ID_MAX
                or len(client_secret) > CLIENT_SECRET_MAX):
            raise TokenRefused("invalid_request", "client_id and client_secret are required")
        found = await self._store.find_active(client_id, self._clock.now())
        verified = await anyio.to_thread.run_sync(_verify, found.secret_hash if found else _DUMMY_HASH,
                                                  client_secret)
        if found is not None:
            note_partner(found.partner_id)  # the request's partner, for its metrics and access line
        if found is None or not verified:
            raise TokenRefused("invalid_client", "unknown client or wrong secret", status=401)
        return found

    def verify_token(self, token: str) -> TokenClaims | None:
        """The claims of a genuine, unexpired partner token; None if it is not one."""
        try:
            claims = jwt.decode(token, self._signing_key, algorithms=["HS256"], issuer=TOKEN_ISSUER,
                                options={"require": ["exp", "sub", "cid", "iss", "jti"]})
        except jwt.PyJWTError:
            return None
        scope = claims.get("scope")
        return TokenClaims(partner_id=claims["sub"], client_id=claims["cid"], expires=float(claims["exp"]),
                           token_id=str(claims["jti"]),
                           # No claim: a token issued before scopes existed, which could do everything.
                           scopes=frozenset(scope.split() if isinstance(scope, str) else PARTNER_SCOPES))

    def signed_for(self, token: str) -> str | None:
        """The partner a token was issued to when this service signed it, expired or not; else None."""
        try:
            claims = jwt.decode(token, self._signing_key, algorithms=["HS256"], issuer=TOKEN_ISSUER,
                                options={"verify_exp": False, "require": ["sub"]})
        except jwt.PyJWTError:
            return None
        return claims["sub"] if isinstance(claims["sub"], str) else None

    async def still_allowed(self, claims: TokenClaims) -> bool:
        """Checked on every request: the token and its credential are valid and the partner may act."""
        if claims.token_id in self._revoked:
            return False
        now = self._clock.now()
        credential = self._active.get(claims.client_id)
        if credential is None or credential.partner_id != claims.partner_id:
            credential = await self._store.find_active(claims.client_id, now)
            if credential is None or credential.partner_id != claims.partner_id:
                return False
            self._active[claims.client_id] = credential
        if credential.expires_at is not None and credential.expires_at <= now:
            self._active.pop(claims.client_id, None)
            return False
        partner = self._catalog().partners.get(claims.partner_id)
        return partner is not None and not partner_inactive(partner, now)

    def rate_limit(self, partner_id: str) -> int | None:
        """The partner's own requests-a-second limit, if the catalog sets one."""
        partner = self._catalog().partners.get(partner_id)
        return partner.rate_limit if partner is not None else None

    def _remember_revoked(self, token_id: str, expires_at: datetime) -> None:
        if len(self._revoked) >= REVOKED_LIMIT:
            now = self._clock.now()
            self._revoked = {k: v for k, v in self._revoked.items() if v > now}
        self._revoked[token_id] = expires_at


def _verify(secret_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False
