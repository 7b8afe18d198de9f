"""Per-partner rate limits: a token bucket per partner, refilled continuously.

Enforced per process: with N replicas behind a load balancer that spreads a partner's
requests evenly, the partner's effective limit is N times the configured rate. Set the
rate to the wanted total divided by the number of replicas (README, "Rate limits").
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
        self.rate = rate  # requests a second, and the bucket's size; 0 = no limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)

    def check(self, key: str, rate: int | None = None) -> Verdict:
        """One request by `key`, at its own rate if it has one (a partner's override), else the default."""
        rate = self.rate if rate is None else rate
        if rate <= 0:
            return Verdict(True, 0, 0, 0)
        now = self._clock()
        tokens, last = self._buckets.get(key, (float(rate), now))
        tokens = min(float(rate), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return Verdict(True, rate, int(tokens - 1.0), 0)
        self._buckets[key] = (tokens, now)
        return Verdict(False, rate, 0, max(1, math.ceil((1.0 - tokens) / rate)))
