import pytest

from infership.auth import ANONYMOUS, Principal, RateLimit, RateLimiter, Scope
from infership.errors import RateLimited


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_burst_is_admitted_then_the_next_request_is_told_when_to_retry() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_second=2, burst=3), clock=clock)
    for _ in range(3):
        limiter.check(ANONYMOUS)
    with pytest.raises(RateLimited, match="rate of 2 requests/s") as caught:
        limiter.check(ANONYMOUS)
    assert caught.value.retry_after_s == pytest.approx(0.5)


def test_tokens_refill_at_the_rate_and_never_beyond_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(RateLimit(requests_per_second=10, burst=2), clock=clock)
    limiter.check(ANONYMOUS)
    limiter.check(ANONYMOUS)
    clock.t += 0.1  # one token back
    limiter.check(ANONYMOUS)
    with pytest.raises(RateLimited):
        limiter.check(ANONYMOUS)
    clock.t += 60  # a long quiet spell refills only up to the burst
    limiter.check(ANONYMOUS)
    limiter.check(ANONYMOUS)
    with pytest.raises(RateLimited):
        limiter.check(ANONYMOUS)


def test_each_principal_and_each_anonymous_caller_has_its_own_bucket() -> None:
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), clock=Clock())
    alice = Principal("alice", frozenset({Scope.INFER}))
    limiter.check(alice)
    limiter.check(ANONYMOUS, caller="10.0.0.1")
    limiter.check(ANONYMOUS, caller="10.0.0.2")
    with pytest.raises(RateLimited, match="'alice'"):
        limiter.check(alice)
    with pytest.raises(RateLimited):
        limiter.check(ANONYMOUS, caller="10.0.0.1")


def test_a_keys_own_limit_wins_over_the_default_and_no_limit_means_unlimited() -> None:
    clock = Clock()
    fast = Principal("fast", frozenset({Scope.INFER}), RateLimit(requests_per_second=1, burst=5))
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), clock=clock)
    for _ in range(5):
        limiter.check(fast)
    unlimited = RateLimiter(None, clock=clock)
    for _ in range(1000):
        unlimited.check(ANONYMOUS)


def test_memory_is_bounded_by_dropping_the_least_recent_callers() -> None:
    limiter = RateLimiter(RateLimit(requests_per_second=1, burst=1), max_callers=2, clock=Clock())
    limiter.check(ANONYMOUS, caller="a")
    limiter.check(ANONYMOUS, caller="b")
    limiter.check(ANONYMOUS, caller="c")  # evicts "a", whose bucket starts full again
    limiter.check(ANONYMOUS, caller="a")
    with pytest.raises(RateLimited):
        limiter.check(ANONYMOUS, caller="c")
