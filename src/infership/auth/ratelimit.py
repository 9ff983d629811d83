"""Per-caller request rates: one token bucket per principal, answered with RateLimited."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from infership.auth.keys import Principal
from infership.errors import RateLimited
from infership.settings import RateLimit


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each request takes one."""

    def __init__(self, limit: RateLimit, now: float) -> None:
        self.rate = limit.requests_per_second
        self.capacity = float(limit.burst)
        self.tokens = self.capacity
        self.updated = now

    def take(self, now: float) -> float:
        """Take a token: 0.0 if one was free, else the seconds until one will be (none taken)."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1.0 - 1e-9:  # a refill of exactly one token may round to 0.99999...
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """Buckets by principal name. A principal's own limit wins over ``default``; with neither,
    the caller is not limited. The least recently seen buckets are dropped past ``max_callers``
    so that many distinct callers cannot grow memory without bound."""

    def __init__(
        self,
        default: RateLimit | None,
        *,
        max_callers: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.default = default
        self.max_callers = max_callers
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, principal: Principal, caller: str | None = None) -> None:
        """Count one request of ``principal`` (``caller`` distinguishes anonymous callers,
        e.g. by address). Raises RateLimited with the wait until the next token."""
        limit = principal.rate_limit or self.default
        if limit is None:
            return
        key = principal.name if caller is None else f"{principal.name}/{caller}"
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(limit, now)
                if len(self._buckets) > self.max_callers:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            wait = bucket.take(now)
        if wait > 0.0:
            raise RateLimited(
                f"'{principal.name}' is over its rate of {limit.requests_per_second:g} "
                f"requests/s (burst {limit.burst}); retry in {wait:.2f} s",
                retry_after_s=wait,
            )
