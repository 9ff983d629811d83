"""Who may call the server, and how often: API keys with scopes, and per-caller rate limits.

Transport-neutral: REST and gRPC each pull the token out of their own headers or metadata and
call ``KeyStore.authenticate`` and ``RateLimiter.check``; errors map to 401/403/429 and
UNAUTHENTICATED/PERMISSION_DENIED/RESOURCE_EXHAUSTED in each transport's one table.
"""

from infership.auth.keys import ANONYMOUS, KeyStore, Principal, Scope, digest, new_key
from infership.auth.ratelimit import RateLimiter, TokenBucket
from infership.settings import RateLimit

__all__ = [
    "ANONYMOUS",
    "KeyStore",
    "Principal",
    "RateLimit",
    "RateLimiter",
    "Scope",
    "TokenBucket",
    "digest",
    "new_key",
]
