"""Who may call which kind of endpoint: the one decision REST and gRPC both ask for."""

from __future__ import annotations

import enum

from infership.auth.keys import ANONYMOUS, KeyStore, Principal, Scope
from infership.auth.ratelimit import RateLimiter
from infership.settings import AuthSettings


class Access(enum.Enum):
    """What an endpoint exposes, which decides the scope it needs."""

    PUBLIC = "public"
    """The web page and the API description: nothing a key would protect."""

    HEALTH = "health"
    """Liveness and readiness; open unless ``protect_health``."""

    METRICS = "metrics"
    """Prometheus metrics; open unless ``protect_metrics``."""

    INFER = "infer"
    """Inference and model metadata."""

    ADMIN = "admin"
    """The repository API."""


_SCOPES = {
    Access.HEALTH: Scope.METRICS,
    Access.METRICS: Scope.METRICS,
    Access.INFER: Scope.INFER,
    Access.ADMIN: Scope.ADMIN,
}


class AccessPolicy:
    """Authenticates a request for an endpoint and counts it against its caller's rate."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        self.keys = KeyStore(
            keys_file=settings.keys_file,
            tokens=[t.get_secret_value() for t in settings.tokens],
            admin_tokens=[t.get_secret_value() for t in settings.admin_tokens],
        )
        self._limiter = RateLimiter(
            settings.key_rate_limit if self.keys.enabled else settings.anonymous_rate_limit
        )

    @property
    def enabled(self) -> bool:
        return self.keys.enabled

    def admit(self, access: Access, token: str | None, client: str | None) -> Principal:
        """The caller, if it may use an ``access`` endpoint now. Raises Unauthenticated,
        Forbidden or RateLimited. ``client`` (an address) tells anonymous callers apart."""
        principal = self.authenticate(access, token)
        if access in (Access.INFER, Access.ADMIN):
            self._limiter.check(principal, None if self.keys.enabled else client)
        return principal

    def authenticate(self, access: Access, token: str | None) -> Principal:
        """The caller, if its key opens ``access`` endpoints; nothing is counted against its
        rate. Raises Unauthenticated or Forbidden. A stream is authenticated once when it
        opens, and each request on it is admitted as it arrives."""
        if access is Access.PUBLIC:
            return ANONYMOUS
        if (access is Access.HEALTH and not self.settings.protect_health) or (
            access is Access.METRICS and not self.settings.protect_metrics
        ):
            return ANONYMOUS  # probes and scrapers are neither authenticated nor rate limited
        return self.keys.authenticate(token, _SCOPES[access])


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value (any letter case)."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None
