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


def test_each_of_several_replicas_enforces_its_share_of_the_deployments_rate():
    clock = ManualClock()
    limiter = RateLimiter(12, clock)
    limiter.replicas = 3
    answers = [limiter.check("acme") for _ in range(6)]
    assert [a.allowed for a in answers] == [True] * 4 + [False] * 2  # a third of the burst here
    assert answers[0].limit == 12  # the deployment's limit, as the partner knows it
    clock.now += 0.25  # a quarter of a second refills one token at 12 / 3 = 4/s
    assert limiter.check("acme").allowed and not limiter.check("acme").allowed
    limiter.replicas = 1  # the others died: the whole rate here, within a refill
    clock.now += 1.0
    assert sum(limiter.check("acme").allowed for _ in range(20)) == 12


def test_a_share_below_one_request_still_lets_one_through_at_its_pace():
    clock = ManualClock()
    limiter = RateLimiter(2, clock)
    limiter.replicas = 4  # half a request a second each
    assert [limiter.check("acme").allowed for _ in range(3)] == [True, False, False]
    assert limiter.check("acme").retry_after == 2
    clock.now += 2.0
    assert limiter.check("acme").allowed
