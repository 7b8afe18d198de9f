"""End-user tokens signed by an identity provider: RS256 or ES256, checked against its JWKS.

The key is chosen by the token's `kid`, and the key's type alone fixes the algorithm
(consent/adapters/jwks.py), so `alg: none`, HMAC tokens keyed with a public key and an
RS256 header on an EC key are all refused.
"""

from __future__ import annotations

from typing import Any

import jwt

from consent.adapters.jwks import ALGORITHM_BY_KEY_TYPE, JwksKeys
from consent.api.errors import unauthorized
from consent.config import Settings

ALGORITHMS = frozenset(ALGORITHM_BY_KEY_TYPE.values())


class IdentityProviderTokens:
    def __init__(self, keys: JwksKeys, issuer: str, audience: str, leeway: float) -> None:
        self.keys = keys
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    async def verify(self, token: str, header: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """(the token's claims, until when they may be trusted without checking again)."""
        kid = header.get("kid")
        if header.get("alg") not in ALGORITHMS or not isinstance(kid, str):
            raise unauthorized("invalid token")
        key = await self.keys.get(kid)
        if key is None:
            raise unauthorized("unknown signing key")
        try:
            claims = jwt.decode(token, key, algorithms=[key.algorithm_name], issuer=self._issuer,
                                audience=self._audience, leeway=self._leeway,
                                options={"require": ["exp", "iss", "aud", "sub"]})
        except jwt.PyJWTError:
            raise unauthorized("invalid or expired token") from None
        return claims, float(claims["exp"]) + self._leeway


async def identity_provider(settings: Settings) -> IdentityProviderTokens | None:
    """The configured provider with its keys fetched once at start-up, or None without CONSENT_USER_JWKS_URL."""
    if settings.user_jwks_url is None:
        return None
    keys = JwksKeys(settings.user_jwks_url, settings.user_jwks_cache_seconds, settings.user_jwks_min_refetch_seconds)
    # A failed first fetch is logged and retried when tokens arrive: decisions do not depend on the provider.
    await keys.refresh()
    return IdentityProviderTokens(keys, settings.user_token_issuer or "", settings.user_token_audience or "",
                                  settings.user_token_leeway)
