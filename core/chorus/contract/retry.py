"""The failover policy of a provider: when a failed upstream call is retried, when another
candidate is tried instead, and when the provider's circuit opens.

Every ``[[providers]]`` table has these keys (:class:`FailoverPolicy` is the base of
:class:`~chorus.providers.ProviderSettings`); the runtime applies them around every driver, so a
driver only raises the right :class:`~chorus.errors.UpstreamError` subclass (see
``docs/reliability.md``):

* :func:`classify` sorts a failure into :data:`RETRY` (transient: unreachable, timed out, the
  connection lost, 408/409/429/5xx), :data:`FALLBACK` (this provider cannot answer, retrying will not
  help: its credentials were rejected, its circuit is open) or :data:`FINAL` (the request is at fault,
  a 4xx such as 400/401/403/404/413/422, or the upstream answered something unusable);
* :func:`backoff` is the wait before retry ``n``: exponential with equal jitter, capped;
* :func:`retry_after_seconds` reads ``Retry-After`` (seconds or an HTTP date).
"""

from __future__ import annotations

import email.utils
import random
from typing import Annotated, Final, Literal

import msgspec

from chorus.contract.config import Strict
from chorus.contract.errors import (
    UpstreamCircuitOpen,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = ["FALLBACK", "FINAL", "RETRY", "FailoverPolicy", "Verdict", "backoff", "classify", "retry_after_seconds"]

Verdict = Literal["retry", "fallback", "final"]
RETRY: Final = "retry"
FALLBACK: Final = "fallback"
FINAL: Final = "final"

_RETRIED_STATUSES = frozenset({408, 409, 429})
_PROVIDER_REFUSED = frozenset({401, 403})  # with the gateway's credentials: the provider's problem, not the client's


class FailoverPolicy(Strict, kw_only=True):
    """The failover keys of every ``[[providers]]`` table (defaults are production defaults)."""

    #: Further attempts after a transient failure before any byte reached the client (0: none).
    retries: Annotated[int, msgspec.Meta(ge=0, le=10)] = 2
    #: Seconds before the first retry; doubled for each further one (with jitter), at most ``retry_backoff_max``.
    retry_backoff: Annotated[float, msgspec.Meta(ge=0)] = 0.5
    retry_backoff_max: Annotated[float, msgspec.Meta(ge=0)] = 8.0
    #: Longest ``Retry-After`` honoured; an upstream asking for a longer wait is not retried.
    retry_after_max: Annotated[float, msgspec.Meta(ge=0)] = 30.0
    #: Consecutive failed attempts that open the provider's circuit (0: no circuit breaker).
    breaker_failures: Annotated[int, msgspec.Meta(ge=0)] = 5
    #: Seconds an open circuit skips the provider before one trial request (half-open).
    breaker_cooldown_seconds: Annotated[float, msgspec.Meta(gt=0)] = 30.0


def classify(error: UpstreamError) -> Verdict:
    """What a failed upstream call allows: another attempt, another candidate, or neither."""
    if isinstance(error, UpstreamUnavailable | UpstreamTimeout | UpstreamConnectionLost):
        return RETRY
    if isinstance(error, UpstreamCircuitOpen):
        return FALLBACK
    if isinstance(error, UpstreamInvalidResponse):
        return FINAL
    status = error.upstream_status or error.status_code
    if status in _RETRIED_STATUSES or status >= 500:
        return RETRY
    if status in _PROVIDER_REFUSED and error.status_code >= 500:  # not relayed: the gateway's key was refused
        return FALLBACK
    return FINAL


def backoff(policy: FailoverPolicy, retry: int, rand: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``retry`` (1 for the first): equal jitter, so between half
    and all of ``retry_backoff * 2**(retry-1)``, capped at ``retry_backoff_max``."""
    ceiling = min(policy.retry_backoff_max, policy.retry_backoff * 2.0 ** (retry - 1))
    half = ceiling / 2
    jitter: float = (rand or random).uniform(0, half)
    return half + jitter


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now`` (a UNIX time): delta-seconds or an HTTP date; ``None``
    when absent or unreadable. A date in the past is 0."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)
