"""Who is calling: an admin key, an end user's token (HS256, or RS256/ES256 from an identity provider), or a
partner access token.

Verified tokens are cached until they expire, keyed by the token, so the hot paths
pay for a signature check once per token rather than once per request.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Literal

import jwt
from msgspec import Struct

from consent.api.errors import forbidden, problem, unauthorized
from consent.api.idp_tokens import IdentityProviderTokens
from consent.app.partner_access import TOKEN_KID, PartnerAccess, TokenClaims
from consent.app.rate_limit import RateLimiter
from consent.app.telemetry import note_partner, note_violation

CACHE_LIMIT = 10_000


class Principal(Struct, frozen=True):
    kind: Literal["admin", "user", "partner"]
    id: str  # admin: key id (a hash prefix, never the key); user: subject id; partner: partner id
    token: TokenClaims | None = None  # partner tokens: what is re-checked on every request

    @property
    def actor(self) -> str:
        """How the log's metadata names who acted; an end user is the stream's own subject."""
        return "subject" if self.kind == "user" else f"{self.kind}:{self.id}"


def key_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


class Authenticator:
    def __init__(self, admin_keys: tuple[str, ...], user_token_secret: str | None,
                 partners: PartnerAccess, rate_limiter: RateLimiter | None = None,
                 identity_provider: IdentityProviderTokens | None = None) -> None:
        self._admin_keys = {hashlib.sha256(k.encode()).digest(): k for k in admin_keys}
        self._user_secret = user_token_secret
        self._identity_provider = identity_provider
        self._partners = partners
        self._rate_limiter = rate_limiter or RateLimiter(0)
        self._verified: dict[str, tuple[Principal, float]] = {}

    async def authenticate(self, authorization: str | None) -> Principal:
        if not authorization or authorization[:7].lower() != "bearer ":
            raise unauthorized()
        token = authorization[7:].strip()
        cached = self._verified.get(token)
        if cached is None or cached[1] <= time.time():
            cached = await self._verify(token)
            if len(self._verified) >= CACHE_LIMIT:
                self._verified.clear()
            self._verified[token] = cached
        principal = cached[0]
        if principal.token is not None:
            note_partner(principal.id)  # the request's partner, for its metrics and access line
            if not await self._partners.still_allowed(principal.token):
                note_violation("invalid_token")
                raise unauthorized("the credential was revoked or the partner is not active")
            verdict = self._rate_limiter.check(principal.id, self._partners.rate_limit(principal.id))
            if not verdict.allowed:
                note_violation("rate_limited")
                raise problem(429, "rate_limited", f"more than {verdict.limit} requests a second",
                              headers={"Retry-After": str(verdict.retry_after),
                                       "RateLimit-Limit": str(verdict.limit), "RateLimit-Remaining": "0",
                                       "RateLimit-Reset": str(verdict.retry_after)})
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        admin_key = self._admin_keys.get(hashlib.sha256(token.encode()).digest())
        if admin_key is not None and hmac.compare_digest(admin_key.encode(), token.encode()):
            return Principal("admin", key_id(admin_key)), time.time() + 60
        if token.count(".") != 2:
            raise unauthorized()
        try:
            header = jwt.get_unverified_header(token)
            kid = header.get("kid")
        except jwt.PyJWTError:
            raise unauthorized("malformed token") from None
        if kid == TOKEN_KID:
            claims = self._partners.verify_token(token)
            if claims is None:
                # An expired token still names its partner, if this service signed it; a forged one does not.
                signed_for = self._partners.signed_for(token)
                if signed_for is not None:
                    note_partner(signed_for)
                note_violation("invalid_token")
                raise unauthorized("invalid or expired token")
            return Principal("partner", claims.partner_id, claims), claims.expires
        if self._identity_provider is not None and header.get("alg") != "HS256":
            claims, valid_until = await self._identity_provider.verify(token, header)
        elif self._user_secret is None:
            raise unauthorized("end-user tokens are not accepted: CONSENT_USER_TOKEN_SECRET is not set")
        else:
            try:
                claims = jwt.decode(token, self._user_secret, algorithms=["HS256"],
                                    options={"require": ["exp", "sub"]})
            except jwt.PyJWTError:
                raise unauthorized("invalid or expired token") from None
            valid_until = float(claims["exp"])
        subject = claims["sub"]
        if not isinstance(subject, str) or not 1 <= len(subject) <= 128:
            raise unauthorized("token subject is not a subject id")
        return Principal("user", subject), valid_until


def require_admin(principal: Principal) -> None:
    if principal.kind != "admin":
        raise forbidden("this operation is for administrators")


def require_subject_access(principal: Principal, subject_id: str) -> None:
    """Admins act on any subject; an end user only on their own; partners never here."""
    if principal.kind == "admin" or (principal.kind == "user" and principal.id == subject_id):
        return
    raise forbidden("this caller may not act on this subject")


def require_partner_or_admin(principal: Principal, scope: str) -> None:
    """Partners whose token carries `scope`, and admins; end users never (decisions, permissions)."""
    if principal.kind == "partner":
        require_scope(principal, scope)
    elif principal.kind != "admin":
        raise forbidden("decisions are for partners and administrators")


def require_scope(principal: Principal, scope: str) -> None:
    """A partner token must carry the route's OAuth scope (RFC 6750 §3.1); other callers have no scopes."""
    if principal.token is not None and scope not in principal.token.scopes:
        note_violation("insufficient_scope")
        raise problem(403, "insufficient_scope", f"this token does not carry the {scope!r} scope",
                      headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'})
