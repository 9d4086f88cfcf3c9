"""Failover around every provider driver: retries, fallback candidates and a circuit breaker.

Drivers stay simple: they make one attempt and raise the right :class:`UpstreamError` subclass. The
runtime wraps each driver in a :class:`GuardedProvider` (what the registry hands out, so the
pipeline, team members, embeddings and plugins all get the same behaviour), which applies its
provider's :class:`~chorus.contract.retry.FailoverPolicy`:

* a transient failure (see :func:`~chorus.contract.retry.classify`) is retried up to ``retries``
  times, after ``Retry-After`` when the upstream sent one (not retried when it asks for longer than
  ``retry_after_max``) or an exponential backoff with jitter;
* a stream is retried only until its first chunk: :class:`_Stream` opens it, and once a chunk
  has been handed on it only relays (one method call per chunk, no extra frame);
* ``breaker_failures`` consecutive failed attempts open the provider's circuit: for
  ``breaker_cooldown_seconds`` it is skipped (:class:`~chorus.contract.errors.UpstreamCircuitOpen`),
  then one trial request goes through (half-open) and its outcome closes or reopens the circuit.

:class:`Failover` runs a :class:`~chorus.contract.context.Target`'s candidates (the primary, then its
``fallbacks``) in order, moving on when a candidate still fails after its retries with a failure
another upstream may not have (never for a request the upstream refused as malformed), and records
in ``ctx.upstream`` which one answered. :class:`FailoverStats` counts retries, fallbacks and opened
circuits per provider for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from chorus.contract.config import Price
from chorus.contract.context import Provider, RequestContext, Target
from chorus.contract.errors import UpstreamCircuitOpen, UpstreamError
from chorus.contract.providers import ProviderDriver, ProviderSettings
from chorus.contract.retry import FINAL, RETRY, backoff, classify, retry_after_seconds
from chorus.contract.schemas import ChatCompletionRequest

log = logging.getLogger("chorus.failover")

T = TypeVar("T")
Chunk = dict[str, Any]
_END: Any = object()  # a stream that ended before its first chunk


class ProviderStats:
    """Counters of one provider since startup (for metrics)."""

    __slots__ = ("circuit_opens", "fallbacks", "retries", "skipped")

    def __init__(self) -> None:
        self.retries = 0        # attempts made again after a transient failure
        self.fallbacks = 0      # calls that moved on from this provider to the next candidate
        self.circuit_opens = 0  # times its circuit opened
        self.skipped = 0        # calls refused while its circuit was open

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class FailoverStats:
    """Every provider's :class:`ProviderStats`, and its circuit's state."""

    def __init__(self) -> None:
        self.providers: dict[str, ProviderStats] = {}
        self.breakers: dict[str, Breaker] = {}

    def of(self, provider: str) -> ProviderStats:
        stats = self.providers.get(provider)
        if stats is None:
            stats = self.providers[provider] = ProviderStats()
        return stats

    def circuits(self) -> dict[str, str]:
        """``"closed"``, ``"open"`` or ``"half_open"`` for each provider with a circuit breaker."""
        return {provider: breaker.state for provider, breaker in self.breakers.items()}

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.providers.values())

    @property
    def fallbacks(self) -> int:
        return sum(s.fallbacks for s in self.providers.values())

    @property
    def circuit_opens(self) -> int:
        return sum(s.circuit_opens for s in self.providers.values())


class Breaker:
    """One provider's circuit: closed, open (skipped until the cool-down ends), then half-open."""

    __slots__ = ("cooldown", "failures", "opened_at", "provider", "stats", "threshold", "trial")

    def __init__(self, provider: str, threshold: int, cooldown: float, stats: ProviderStats) -> None:
        self.provider = provider
        self.threshold = threshold
        self.cooldown = cooldown
        self.stats = stats
        self.failures = 0
        self.opened_at: float | None = None
        self.trial = False  # half-open: the one trial request is in flight

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        if self.trial or time.monotonic() >= self.opened_at + self.cooldown:
            return "half_open"
        return "open"

    def admit(self) -> bool:
        """Let a call through (``True``: it is the half-open circuit's trial), or raise
        :class:`UpstreamCircuitOpen` while the circuit is open."""
        opened_at = self.opened_at
        if opened_at is None:
            return False
        remaining = opened_at + self.cooldown - time.monotonic()
        if remaining <= 0 and not self.trial:
            self.trial = True
            log.info("provider %s: circuit half-open, sending one trial request", self.provider)
            return True
        self.stats.skipped += 1
        wait = max(remaining, 0.0)
        what = "a trial request is in flight" if remaining <= 0 else f"skipped for {wait:.1f}s more"
        raise UpstreamCircuitOpen(
            f"provider {self.provider!r} is failing: its circuit is open after {self.threshold} consecutive "
            f"failures ({what})",
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )

    def success(self) -> None:
        if self.opened_at is not None:
            log.info("provider %s: circuit closed (the trial request succeeded)", self.provider)
            self.opened_at = None
        self.failures = 0
        self.trial = False

    def failure(self, error: UpstreamError) -> None:
        self.failures += 1
        if self.trial:
            self.trial = False
            self.opened_at = time.monotonic()
            log.warning("provider %s: circuit open again, the trial request failed (%s); skipped for %gs",
                        self.provider, error.code, self.cooldown)
        elif self.opened_at is None and self.failures >= self.threshold:
            self.opened_at = time.monotonic()
            self.stats.circuit_opens += 1
            log.warning("provider %s: circuit open after %d consecutive failures (last: %s); skipped for %gs",
                        self.provider, self.failures, error.code, self.cooldown)

    def release(self) -> None:
        """A call ended without a verdict (cancelled): a trial slot is given back."""
        self.trial = False


class GuardedProvider:
    """A provider driver with its failover policy applied (implements the ``Provider`` protocol)."""

    __slots__ = ("breaker", "driver", "settings", "stats")

    def __init__(self, driver: ProviderDriver, stats: FailoverStats) -> None:
        self.driver = driver
        self.settings: ProviderSettings = driver.settings
        self.stats = stats.of(driver.id)
        self.breaker: Breaker | None = None
        if self.settings.breaker_failures:
            self.breaker = stats.breakers[driver.id] = Breaker(
                driver.id, self.settings.breaker_failures, self.settings.breaker_cooldown_seconds, self.stats
            )

    @property
    def id(self) -> str:
        return self.driver.id

    def advertised_models(self) -> list[str]:
        return self.driver.advertised_models()

    def price(self, model: str) -> Price | None:
        return self.driver.price(model)

    def serves(self, model: str) -> bool:
        return self.driver.serves(model)

    async def complete(self, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]:
        """The driver's ``complete``, retried per the policy."""
        driver = self.driver
        return await self._call(lambda: driver.complete(body, ctx), ctx)

    async def embed(self, inputs: list[str], model: str, *, dimensions: int | None = None) -> dict[str, Any]:
        """The driver's ``embed``, retried per the policy."""
        driver = self.driver
        return await self._call(lambda: driver.embed(inputs, model, dimensions=dimensions), None)

    def stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[Chunk]:
        """The driver's ``stream``, retried per the policy until its first chunk."""
        return _Stream(None, ((self, body.model),), body, ctx)

    async def _call(self, make: Callable[[], Awaitable[T]], ctx: RequestContext | None) -> T:
        breaker = self.breaker
        retry = 0
        while True:
            trial = breaker.admit() if breaker is not None else False
            try:
                result = await make()
            except UpstreamError as exc:
                delay = self._after_failure(exc, retry, ctx)
                if delay is None:
                    raise
                retry += 1
                await asyncio.sleep(delay)
                continue
            except BaseException:
                if trial and breaker is not None:
                    breaker.release()
                raise
            if breaker is not None:
                breaker.success()
            return result

    async def open_stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> tuple[AsyncIterator[Chunk], Any]:
        """Open the driver's stream and read its first chunk, retrying per the policy; ``(stream, first)``
        (``first`` is :data:`_END` for a stream without chunks)."""
        driver = self.driver

        async def attempt() -> tuple[AsyncIterator[Chunk], Any]:
            stream = driver.stream(body, ctx)
            return stream, await anext(stream, _END)

        return await self._call(attempt, ctx)

    def _after_failure(self, error: UpstreamError, retry: int, ctx: RequestContext | None) -> float | None:
        """Count the failure (also in the request's observation); the seconds to wait before retrying,
        or ``None`` to give up."""
        request_id = ctx.request_id if ctx is not None else None
        verdict = classify(error)
        breaker = self.breaker
        if breaker is not None:
            if verdict == FINAL:
                breaker.success()  # the provider answered: the request was at fault
            else:
                opens = self.stats.circuit_opens
                breaker.failure(error)
                if ctx is not None and self.stats.circuit_opens != opens:
                    ctx.observation.circuit_opens += 1
        settings = self.settings
        if verdict != RETRY or retry >= settings.retries:
            return None
        if breaker is not None and breaker.opened_at is not None:
            return None  # the circuit just opened: stop hammering, let a fallback answer
        wait = retry_after_seconds(error.retry_after, time.time())
        if wait is None:
            wait = backoff(settings, retry + 1)
        elif wait > settings.retry_after_max:
            log.info("request %s: provider %s asks to retry after %.0fs, beyond retry_after_max (%gs): not retried",
                     request_id, self.id, wait, settings.retry_after_max)
            return None
        self.stats.retries += 1
        if ctx is not None:
            ctx.observation.retries += 1
        log.info("request %s: provider %s failed (%s); retry %d of %d in %.2fs",
                 request_id, self.id, error.code, retry + 1, settings.retries, wait)
        return wait


class Failover:
    """Runs a target's candidates in order; builds the guarded providers and keeps their counters."""

    def __init__(self) -> None:
        self.stats = FailoverStats()

    def guard(self, driver: ProviderDriver) -> GuardedProvider:
        """Wrap a driver with its failover policy (once per provider, at startup)."""
        return GuardedProvider(driver, self.stats)

    async def complete(self, target: Target, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]:
        """A non-streaming model call for ``target``; ``ctx.upstream`` names who answered."""
        if not target.fallbacks:
            result = await target.provider.complete(body, ctx)
            ctx.upstream = f"{target.provider.id}/{target.model}"
            return result
        candidates = ((target.provider, target.model), *target.fallbacks)
        failures: list[UpstreamError] = []
        for index, (provider, model) in enumerate(candidates):
            try:
                result = await provider.complete(_for(body, model), ctx)
            except UpstreamError as exc:
                self.next_candidate(exc, candidates, index, ctx, failures)
                continue
            ctx.upstream = f"{provider.id}/{model}"
            return result
        raise AssertionError("unreachable: the last candidate's failure is raised")

    def stream(self, target: Target, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[Chunk]:
        """A streaming model call for ``target`` (failover until the first chunk); ``ctx.upstream`` names
        who answered once the first chunk is in."""
        return _Stream(self, ((target.provider, target.model), *target.fallbacks), body, ctx)

    def next_candidate(self, error: UpstreamError, candidates: tuple[tuple[Provider, str], ...], index: int,
                       ctx: RequestContext, failures: list[UpstreamError]) -> None:
        """Candidate ``index`` failed with ``error``: return to try the next one, or raise what the client gets."""
        if classify(error) == FINAL:
            raise error
        failures.append(error)
        provider, model = candidates[index]
        if index + 1 >= len(candidates):
            if len(failures) > 1 and all(isinstance(f, UpstreamCircuitOpen) for f in failures):
                waits = [int(f.headers.get("retry-after", "1")) for f in failures]
                names = ", ".join(f"{p.id}/{m}" for p, m in candidates)
                raise UpstreamCircuitOpen(
                    f"Every upstream of this model is failing and skipped for a cool-down (circuits open: {names}).",
                    headers={"retry-after": str(min(waits))},
                ) from None
            raise error
        self.stats.of(provider.id).fallbacks += 1
        ctx.observation.fallbacks += 1
        following, following_model = candidates[index + 1]
        log.warning("request %s: %s/%s failed (%s); falling back to %s/%s", ctx.request_id, provider.id, model,
                    error.code, following.id, following_model)


def _for(body: ChatCompletionRequest, model: str) -> ChatCompletionRequest:
    return body if body.model == model else msgspec.structs.replace(body, model=model)


class _Stream:
    """A model stream with failover until its first chunk, then a plain relay of the chosen stream."""

    __slots__ = ("_body", "_candidates", "_ctx", "_failover", "_inner")

    def __init__(self, failover: Failover | None, candidates: tuple[tuple[Provider, str], ...],
                 body: ChatCompletionRequest, ctx: RequestContext) -> None:
        self._failover = failover
        self._candidates = candidates
        self._body = body
        self._ctx = ctx
        self._inner: AsyncIterator[Chunk] | None = None

    def __aiter__(self) -> _Stream:
        return self

    def __anext__(self) -> Awaitable[Chunk]:
        inner = self._inner
        if inner is not None:
            return inner.__anext__()
        return self._open()

    async def aclose(self) -> None:
        inner = self._inner
        close = getattr(inner, "aclose", None)
        if close is not None:
            await close()

    async def _open(self) -> Chunk:
        ctx, candidates = self._ctx, self._candidates
        failures: list[UpstreamError] = []
        for index, (provider, model) in enumerate(candidates):
            body = _for(self._body, model)
            try:
                if isinstance(provider, GuardedProvider):
                    stream, first = await provider.open_stream(body, ctx)
                else:
                    stream = provider.stream(body, ctx)
                    first = await anext(stream, _END)
            except UpstreamError as exc:
                if self._failover is None:
                    raise
                self._failover.next_candidate(exc, candidates, index, ctx, failures)
                continue
            self._inner = stream
            ctx.upstream = f"{provider.id}/{model}"
            if first is _END:
                raise StopAsyncIteration
            chunk: Chunk = first
            return chunk
        raise AssertionError("unreachable: the last candidate's failure is raised")
