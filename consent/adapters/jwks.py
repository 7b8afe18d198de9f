"""An identity provider's token-signing keys (a JWKS), from an http(s) URL or a file.

Fetching is blocking I/O, so it runs in a worker thread, never on the event loop.
Keys are kept for a lifetime; a key id not among them (the provider rotated its keys)
fetches again, but at most once per `min_refetch` seconds, so that a flood of made-up
key ids cannot hammer the provider. A failed fetch keeps the keys already known: an
outage at the provider should not sign every end user out.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import math
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import anyio.to_thread
from jwt import PyJWK, PyJWTError

log = logging.getLogger("consent.jwks")

# Only these: a key's type fixes its one algorithm, so a token cannot pick another (algorithm confusion).
ALGORITHM_BY_KEY_TYPE = {"RSA": "RS256", "EC": "ES256"}
MAX_DOCUMENT = 1_048_576
FETCH_TIMEOUT = 5.0


def read_jwks(source: str, timeout: float = FETCH_TIMEOUT) -> dict[str, PyJWK]:
    """The usable signing keys of the JWKS at `source`, by key id (blocking)."""
    if source.startswith(("https://", "http://")):
        request = urllib.request.Request(source, headers={"Accept": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - scheme checked above
            document = answer.read(MAX_DOCUMENT + 1)
    else:
        path = urllib.request.url2pathname(urlparse(source).path) if source.startswith("file://") else source
        document = Path(path).read_bytes()
    if len(document) > MAX_DOCUMENT:
        raise ValueError("the JWKS document is too large")
    parsed = json.loads(document)
    keys = parsed.get("keys") if isinstance(parsed, dict) else None
    if not isinstance(keys, list):
        raise ValueError("the JWKS document has no keys list")
    usable = {}
    for jwk in keys:
        key = _signing_key(jwk)
        if key is not None:
            usable[jwk["kid"]] = key
    return usable


def _signing_key(jwk: object) -> PyJWK | None:
    """The key if it can verify RS256 or ES256 signatures; symmetric, encryption or odd keys are left out."""
    if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
        return None
    algorithm = ALGORITHM_BY_KEY_TYPE.get(jwk.get("kty"))
    if algorithm is None or jwk.get("alg", algorithm) != algorithm or jwk.get("crv", "P-256") != "P-256":
        return None
    try:
        return PyJWK(jwk, algorithm)
    except PyJWTError:
        return None


class JwksKeys:
    def __init__(self, source: str, lifetime: float, min_refetch: float,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._source = source
        self._lifetime = lifetime
        self._min_refetch = min_refetch
        self._now = now
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = -math.inf
        self._tried_at = -math.inf
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts, for operators and tests

    async def refresh(self) -> bool:
        """Fetch now (at start-up); False if it failed and the known keys stay."""
        async with self._lock:
            return await self._fetch()

    async def get(self, kid: str) -> PyJWK | None:
        key = self._keys.get(kid)
        if key is not None and not self._stale():
            return key
        if not self._may_fetch():
            return key
        async with self._lock:
            # Another request may have fetched while this one waited.
            if (kid not in self._keys or self._stale()) and self._may_fetch():
                await self._fetch()
            return self._keys.get(kid)

    def _stale(self) -> bool:
        return self._now() - self._fetched_at >= self._lifetime

    def _may_fetch(self) -> bool:
        return self._now() - self._tried_at >= self._min_refetch

    async def _fetch(self) -> bool:
        self._tried_at = self._now()
        self.fetches += 1
        try:
            keys = await anyio.to_thread.run_sync(read_jwks, self._source)
        except (OSError, ValueError, http.client.HTTPException) as error:  # network, file, HTTP, JSON
            # The type only: a message could quote the URL, which may carry credentials.
            log.warning("the identity provider's JWKS could not be read (%s); keeping %d known keys",
                        type(error).__name__, len(self._keys))
            return False
        if not keys:
            log.warning("the identity provider's JWKS has no RS256 or ES256 signing key with a kid")
        self._keys, self._fetched_at = keys, self._now()
        return True
