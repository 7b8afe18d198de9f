"""Partner credentials and short-lived access tokens (OAuth 2.0 client credentials, RFC 6749 §4.4).

The secret is shown once and kept only as an argon2 hash. Access tokens are JWTs
signed by this service; every request re-checks that the token's credential is
still active and its partner still allowed, so revocation takes effect at once.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

import anyio.to_thread
import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from msgspec import Struct

from consent.app.ports import Clock, RecordedEvent
from consent.domain.catalog import Catalog
from consent.domain.decision import partner_inactive
from consent.domain.errors import Conflict, NotFound
from consent.domain.events import PartnerTerminated

TOKEN_ISSUER = "consent"
TOKEN_KID = "consent-partner"  # tells partner tokens from end-user tokens before verifying
_hasher = PasswordHasher()
# Verified against when the client id is unknown, so that the answer takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class CredentialStore(Protocol):
    async def add(self, client_id: str, partner_id: str, secret_hash: str, now: datetime) -> None: ...

    async def find_active(self, client_id: str) -> tuple[str, str] | None: ...

    async def revoke(self, partner_id: str, client_id: str | None, now: datetime) -> list[str]: ...


class IssuedCredential(Struct):
    client_id: str
    client_secret: str


class AccessToken(Struct):
    access_token: str
    token_type: str
    expires_in: int


class TokenRefused(Exception):
    """An RFC 6749 §5.2 error: `error` is its code."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class TokenClaims(Struct, frozen=True):
    partner_id: str
    client_id: str
    expires: float


class PartnerAccess:
    def __init__(self, store: CredentialStore, catalog: Callable[[], Catalog], clock: Clock,
                 signing_key: str, token_ttl: int) -> None:
        self._store = store
        self._catalog = catalog
        self._clock = clock
        self._signing_key = signing_key
        self._token_ttl = token_ttl
        # Client ids known to be active, with their partner; filled on use, emptied on revocation.
        self._active: dict[str, str] = {}

    async def create_credential(self, partner_id: str) -> IssuedCredential:
        partner = self._catalog().partner(partner_id)
        if partner.status == "terminated":
            raise Conflict("partner_terminated", f"partner {partner_id!r} is terminated")
        client_id = f"cl_{secrets.token_urlsafe(12)}"
        secret = secrets.token_urlsafe(32)
        secret_hash = await anyio.to_thread.run_sync(_hasher.hash, secret)
        await self._store.add(client_id, partner_id, secret_hash, self._clock.now())
        self._active[client_id] = partner_id
        return IssuedCredential(client_id=client_id, client_secret=secret)

    async def revoke_credential(self, partner_id: str, client_id: str) -> None:
        self._catalog().partner(partner_id)
        revoked = await self._store.revoke(partner_id, client_id, self._clock.now())
        self._active.pop(client_id, None)
        if not revoked:
            raise NotFound("credential", client_id)

    async def on_events(self, events: list[RecordedEvent]) -> None:
        """Terminating a partner revokes every credential it holds."""
        for item in events:
            if isinstance(item.event, PartnerTerminated):
                for client_id in await self._store.revoke(item.event.partner_id, None, self._clock.now()):
                    self._active.pop(client_id, None)

    async def issue_token(self, grant_type: str | None, client_id: str | None,
                          client_secret: str | None) -> AccessToken:
        if grant_type != "client_credentials":
            raise TokenRefused("unsupported_grant_type" if grant_type else "invalid_request",
                               "grant_type must be client_credentials")
        if not client_id or not client_secret or len(client_id) > 64 or len(client_secret) > 256:
            raise TokenRefused("invalid_request", "client_id and client_secret are required")
        found = await self._store.find_active(client_id)
        verified = await anyio.to_thread.run_sync(_verify, found[1] if found else _DUMMY_HASH, client_secret)
        if found is None or not verified:
            raise TokenRefused("invalid_client", "unknown client or wrong secret", status=401)
        partner_id = found[0]
        partner = self._catalog().partners.get(partner_id)
        now = self._clock.now()
        if partner is None or partner_inactive(partner, now):
            raise TokenRefused("invalid_client", "the partner is not active", status=401)
        self._active[client_id] = partner_id
        issued = int(time.time())
        token = jwt.encode(
            {"iss": TOKEN_ISSUER, "sub": partner_id, "cid": client_id, "iat": issued,
             "exp": issued + self._token_ttl, "jti": secrets.token_urlsafe(8)},
            self._signing_key, algorithm="HS256", headers={"kid": TOKEN_KID})
        return AccessToken(access_token=token, token_type="Bearer", expires_in=self._token_ttl)

    def verify_token(self, token: str) -> TokenClaims | None:
        """The claims of a genuine, unexpired partner token; None if it is not one."""
        try:
            claims = jwt.decode(token, self._signing_key, algorithms=["HS256"], issuer=TOKEN_ISSUER,
                                options={"require": ["exp", "sub", "cid", "iss"]})
        except jwt.PyJWTError:
            return None
        return TokenClaims(partner_id=claims["sub"], client_id=claims["cid"], expires=float(claims["exp"]))

    async def still_allowed(self, claims: TokenClaims) -> bool:
        """Checked on every request: the credential is not revoked and the partner may act."""
        if self._active.get(claims.client_id) != claims.partner_id:
            found = await self._store.find_active(claims.client_id)
            if found is None or found[0] != claims.partner_id:
                return False
            self._active[claims.client_id] = claims.partner_id
        partner = self._catalog().partners.get(claims.partner_id)
        return partner is not None and not partner_inactive(partner, self._clock.now())


def _verify(secret_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False

