"""Per-partner rate limits: a token bucket per partner, refilled continuously.

The configured rate is the deployment's: with N live replicas (consent/adapters/nats_presence.py tells each
how many) each enforces rate / N, which holds the total when a load balancer spreads a partner's requests
evenly. A replica that is alone, or has no NATS, enforces the whole rate.
"""

from __future__ import annotations

import math
import time

from msgspec import Struct


class Verdict(Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # whole seconds until one request is allowed again


class RateLimiter:
    def __init__(self, rate: int, clock=time.monotonic) -> None:
        self.rate = rate  # requests a second for the deployment, and its burst; 0 = no limit
        self.replicas = 1  # live replicas sharing it
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def check(self, key: str, rate: int | None = None) -> Verdict:
        """One request by `key`, at its own rate if it has one (a partner's override), else the default."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return Verdict(True, 0, 0, 0)
        share = rate / self.replicas
        size = max(1.0, share)  # a bucket that never holds a whole request would refuse them all
        now = self._clock()
        tokens, last = self._buckets.get(key, (size, now))
        tokens = min(size, tokens + (now - last) * share)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return Verdict(True, rate, int((tokens - 1.0) * self.replicas), 0)
        self._buckets[key] = (tokens, now)
        return Verdict(False, rate, 0, max(1, math.ceil((1.0 - tokens) / share)))
