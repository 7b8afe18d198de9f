"""Strict CORS: exact origins only (CONSENT_CORS_ORIGINS), the methods and headers the API uses.

Credentials mode stays off: callers send bearer tokens in the Authorization header, never
cookies, so no browser needs it, and it can never be combined with a wildcard.
"""

from __future__ import annotations

from litestar.config.cors import CORSConfig

METHODS = ["GET", "POST", "PUT", "DELETE"]
REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "If-Match", "Sec-GPC"]
# What a browser script may read from an answer: how long to wait after a 429.
RESPONSE_HEADERS = ["Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"]


def cors_config(origins: tuple[str, ...]) -> CORSConfig | None:
    """None without origins: then no answer carries a CORS header at all."""
    if not origins:
        return None
    return CORSConfig(allow_origins=list(origins), allow_methods=METHODS, allow_headers=REQUEST_HEADERS,
                      allow_credentials=False, expose_headers=RESPONSE_HEADERS, max_age=600)
