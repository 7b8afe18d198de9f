"""The per-partner token bucket."""

from consent.app.rate_limit import RateLimiter


class ManualClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_at_the_rate():
    clock = ManualClock()
    limiter = RateLimiter(3, clock)
    assert [limiter.check("acme").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.check("globex").allowed  # one bucket per partner
    refused = limiter.check("acme")
    assert refused.retry_after == 1 and refused.limit == 3
    clock.now += 0.34  # a third of a second refills one token at 3/s
    assert limiter.check("acme").allowed
    assert not limiter.check("acme").allowed
    assert all(RateLimiter(0, clock).check("acme").allowed for _ in range(100))  # 0 = no limit


def test_a_key_with_its_own_rate_gets_its_own_bucket_size():
    clock = ManualClock()
    limiter = RateLimiter(3, clock)
    assert [limiter.check("acme", 5).allowed for _ in range(6)] == [True] * 5 + [False]
    assert limiter.check("acme", 5).limit == 5
    assert all(limiter.check("globex", 0).allowed for _ in range(50))
