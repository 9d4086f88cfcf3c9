"""Access: who is calling (config and managed keys), what they may spend, and what they spent.

* **Identify.** A presented key is hashed once. Config-file keys are matched in memory (the
  :class:`~chorus.runtime.keys.KeyRing`, as before); other keys are looked up by digest in the
  access store (:mod:`chorus.storage.access`) through an in-process cache: found keys for
  :data:`POSITIVE_TTL` seconds, unknown ones for :data:`NEGATIVE_TTL`. A key created, changed or
  revoked through the admin API is published on the ``keys`` signal channel
  (:mod:`chorus.storage.signals`: Redis when configured, else the state store's own channel), and
  every worker and instance drops it from its cache at once; the TTLs bound how stale a cache can
  be if a notification is lost.
* **Admit.** A key or workspace with limits (``rpm``/``tpm`` per ``[server] limit_window_seconds``)
  or a budget is checked before the request runs. Requests: one shared counter increment per
  limited subject. Tokens and spend are only known once the request ends, so they are added then
  (in the background) and checked before the next request against the latest total this process
  has seen (re-read from the shared counter when older than :data:`READING_TTL`). Keys without
  limits cost no counter call at all. The answer carries OpenAI's ``x-ratelimit-*`` headers.
* **Account.** Every model call's usage is priced (``[[providers]] prices``) into the request's
  :class:`~chorus.contract.context.Ledger`; when the client's request ends, :meth:`Access.finish`
  turns the ledger into usage records (written in batches by a background task, flushed on
  shutdown; a failed write is retried, never dropped silently) and adds tokens and spend to the
  counters of the limited subjects.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import logging
import secrets
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from chorus.contract.config import BUDGET_PERIODS, Budget, Config, Limits, ServerConfig
from chorus.contract.context import RequestContext, Workspace
from chorus.contract.errors import AuthenticationFailed, ChorusError, PermissionDenied, QuotaExceeded, RateLimited
from chorus.runtime.keys import KeyRing, as_digest, new_key
from chorus.storage.access import AccessStore, ManagedKey, UsageRecord
from chorus.storage.signals import Signals, window_start

log = logging.getLogger("chorus.access")

KEYS_CHANNEL = "keys"
POSITIVE_TTL = 30.0     # seconds a found managed key is trusted without the store (notifications drop it sooner)
NEGATIVE_TTL = 2.0      # seconds an unknown key is remembered as unknown
MAX_CACHED = 10_000     # cached digests at most (a flood of wrong keys cannot grow the cache without bound)
READING_TTL = 1.0       # seconds a token or spend total read from the shared counter is reused
FLUSH_INTERVAL = 1.0    # seconds between usage writes
FLUSH_BATCH = 500       # records that trigger a write before the interval
MAX_PENDING = 200_000   # records kept while the store cannot be written; beyond, the oldest are dropped (logged)
NANOS = 1_000_000_000   # cost unit: nano-USD


class Subject:
    """A limited key or workspace: its counters' names and its limits."""

    __slots__ = ("budget_nanos", "label", "name", "period", "rpm", "tpm")

    def __init__(self, name: str, label: str, limits: Limits, budget: Budget | None) -> None:
        self.name = name                      # counter namespace: "k:<key id>" or "w:<workspace>"
        self.label = label                    # for messages: "key key_ab12" / "workspace acme"
        self.rpm = limits.rpm
        self.tpm = limits.tpm
        self.budget_nanos = None if budget is None else round(budget.amount * NANOS)
        self.period = BUDGET_PERIODS[budget.period] if budget is not None else 0


class Caller:
    """An authenticated workspace key: its workspace, id, allow-list and limited subjects."""

    __slots__ = ("allowed", "counts_after", "key_id", "subjects", "workspace")

    def __init__(self, workspace: Workspace, key_id: str, subjects: list[Subject],
                 allowed: list[str] | None = None) -> None:
        self.workspace = workspace
        self.key_id = key_id
        self.subjects = subjects
        self.allowed = allowed
        self.counts_after = any(s.tpm or s.budget_nanos is not None for s in subjects)


class _Reading:
    __slots__ = ("at", "start", "value")

    def __init__(self, value: int, start: int, at: float) -> None:
        self.value, self.start, self.at = value, start, at


def config_key_id(digest: bytes) -> str:
    """The id of a config-file key in usage records: ``cfg_`` and 12 hex digits of its digest."""
    return "cfg_" + digest.hex()[:12]


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's ``x-ratelimit-reset-*`` headers write it (``1s``, ``6m0s``, ``20ms``)."""
    if seconds < 1:
        return f"{max(int(seconds * 1000), 0)}ms"
    minutes, rest = divmod(seconds, 60)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Access:
    """Identification, admission and accounting of one process (see the module docstring)."""

    def __init__(self, config: Config, keyring: KeyRing, workspaces: dict[str, Workspace], store: AccessStore,
                 signals: Signals) -> None:
        self.keyring = keyring
        self.workspaces = workspaces
        self.store = store
        self.signals = signals
        server: ServerConfig = config.server
        self.window = server.limit_window_seconds
        self.admin_ring = KeyRing((entry, "admin") for entry in server.admin_keys)
        self._workspace_subjects: dict[str, Subject] = {}
        for ws in config.workspaces:
            if ws.limits.rpm or ws.limits.tpm or ws.budget is not None:
                self._workspace_subjects[ws.id] = Subject(f"w:{ws.id}", f"workspace {ws.id}", ws.limits, ws.budget)
        self._config_callers: dict[bytes, Caller] = {}
        self._callers: dict[str, Caller] = {}  # by key id: what finish() needs of a request's key
        for ws in config.workspaces:
            workspace = workspaces[ws.id]
            for entry in ws.api_keys:
                digest = as_digest(entry)
                caller = Caller(workspace, config_key_id(digest), self._subjects(ws.id, None))
                self._config_callers[digest] = caller
                self._callers[caller.key_id] = caller
        self._cache: dict[str, tuple[float, Caller | None, ManagedKey | None]] = {}
        self._readings: dict[str, _Reading] = {}
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.dropped = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self.signals.subscribe(KEYS_CHANNEL, self._invalidate)
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="chorus-usage-flush")

    async def aclose(self) -> None:
        """Finish the counting in flight and write every pending usage record."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
        try:
            await self.flush()
        except Exception as exc:  # shutting down: say exactly what is lost
            log.error("usage: %d records could not be written at shutdown (%s: %s)",
                      len(self._pending), type(exc).__name__, exc)

    # -- identify --------------------------------------------------------------------------------

    def admin(self, presented: str) -> bool:
        """Whether ``presented`` is an admin key."""
        return self.admin_ring.workspace_for(presented) is not None

    async def identify(self, presented: str) -> Caller:
        """The caller of a presented workspace key; 401 for unknown, revoked or expired keys."""
        wanted = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        if self.keyring.workspace_for_digest(wanted) is not None:
            return self._config_callers[wanted]
        hexed = wanted.hex()
        now = time.monotonic()
        cached = self._cache.get(hexed)
        if cached is None or cached[0] < now:
            key = await self.store.key_by_digest(hexed)
            caller = self._managed_caller(key) if key is not None else None
            if len(self._cache) >= MAX_CACHED:
                self._cache.clear()
            cached = self._cache[hexed] = (now + (POSITIVE_TTL if key else NEGATIVE_TTL), caller, key)
        _, caller, key = cached
        if caller is None or key is None:
            raise AuthenticationFailed("Incorrect API key provided.", code="invalid_api_key")
        if key.revoked_at is not None:
            raise AuthenticationFailed(f"This API key ({key.prefix}..., id {key.id}) has been revoked.",
                                       code="invalid_api_key")
        if key.expires_at is not None and key.expires_at <= time.time():
            raise AuthenticationFailed(f"This API key ({key.prefix}..., id {key.id}) expired at {iso(key.expires_at)}.",
                                       code="expired_api_key")
        return caller

    def _managed_caller(self, key: ManagedKey) -> Caller | None:
        workspace = self.workspaces.get(key.workspace)
        if workspace is None:  # its workspace left the configuration
            return None
        caller = Caller(workspace, key.id, self._subjects(key.workspace, key), key.allowed_models)
        self._callers[key.id] = caller
        return caller

    def _subjects(self, workspace: str, key: ManagedKey | None) -> list[Subject]:
        subjects: list[Subject] = []
        if key is not None and (key.rpm or key.tpm or key.budget_amount is not None):
            budget = None
            if key.budget_amount is not None:
                budget = Budget(amount=key.budget_amount, period=key.budget_period or "month")  # type: ignore[arg-type]
            subjects.append(Subject(f"k:{key.id}", f"key {key.id}", Limits(rpm=key.rpm, tpm=key.tpm), budget))
        ws = self._workspace_subjects.get(workspace)
        if ws is not None:
            subjects.append(ws)
        return subjects

    def _invalidate(self, message: str) -> None:
        if message == "*":
            self._cache.clear()
        else:
            self._cache.pop(message, None)

    async def changed(self, key: ManagedKey) -> None:
        """Tell every worker and instance that ``key`` changed (they drop it from their caches)."""
        self._invalidate(key.digest)
        await self.signals.publish(KEYS_CHANNEL, key.digest)

    def caller_of(self, ctx: RequestContext) -> Caller | None:
        return self._callers.get(ctx.key_id) if ctx.key_id is not None else None

    def check_model(self, ctx: RequestContext, selector: str) -> None:
        """403 when the request's key has an allow-list that ``selector`` does not match."""
        caller = self.caller_of(ctx)
        if caller is None or caller.allowed is None:
            return
        if not any(fnmatch.fnmatchcase(selector, pattern) for pattern in caller.allowed):
            allowed = ", ".join(caller.allowed) or "nothing"
            raise PermissionDenied(f"This API key may not use {selector!r}; it may use: {allowed}.",
                                   param="model", code="model_not_allowed")

    # -- admit -----------------------------------------------------------------------------------

    async def admit(self, caller: Caller) -> list[tuple[bytes, bytes]] | None:
        """Count the request against its subjects' limits; the ``x-ratelimit-*`` headers (``None``: unlimited).

        Raises :class:`RateLimited` or :class:`QuotaExceeded` (with the headers) when a limit is reached.
        """
        if not caller.subjects:
            return None
        requests: tuple[int, int, float] | None = None  # (limit, remaining, reset in)
        tokens: tuple[int, int, float] | None = None
        refusal: ChorusError | None = None
        window = self.window
        for subject in caller.subjects:
            if subject.rpm:
                count = await self.signals.count(f"rl:{subject.name}:r", 1, window)
                remaining = subject.rpm - count.value
                if requests is None or remaining < requests[1]:
                    requests = (subject.rpm, remaining, count.reset_in)
                if remaining < 0 and refusal is None:
                    refusal = RateLimited(
                        f"Rate limit reached for {subject.label} on requests per {_per(window)}: limit {subject.rpm}. "
                        f"Try again in {format_reset(count.reset_in)}.", error_type="requests")
            if subject.tpm:
                used, reset_in = await self._reading(f"rl:{subject.name}:t", window)
                remaining = subject.tpm - used
                if tokens is None or remaining < tokens[1]:
                    tokens = (subject.tpm, remaining, reset_in)
                if remaining <= 0 and refusal is None:
                    refusal = RateLimited(
                        f"Rate limit reached for {subject.label} on tokens per {_per(window)}: limit {subject.tpm}, "
                        f"used {used}. Try again in {format_reset(reset_in)}.", error_type="tokens")
            if subject.budget_nanos is not None:
                spent, reset_in = await self._reading(f"sp:{subject.name}", subject.period)
                if spent >= subject.budget_nanos and refusal is None:
                    refusal = QuotaExceeded(
                        f"The spend budget of {subject.label} is used up: {spent / NANOS:.6f} of "
                        f"{subject.budget_nanos / NANOS:.6f} USD this period; it resets in {format_reset(reset_in)}.")
        headers: list[tuple[bytes, bytes]] = []
        for kind, value in (("requests", requests), ("tokens", tokens)):
            if value is not None:
                limit, remaining, reset_in = value
                headers += [(f"x-ratelimit-limit-{kind}".encode(), str(limit).encode()),
                            (f"x-ratelimit-remaining-{kind}".encode(), str(max(remaining, 0)).encode()),
                            (f"x-ratelimit-reset-{kind}".encode(), format_reset(reset_in).encode())]
        if refusal is not None:
            refusal.headers = {k.decode(): v.decode() for k, v in headers}
            raise refusal
        return headers

    async def _reading(self, key: str, window: float) -> tuple[int, float]:
        """The counter's current total (reused for :data:`READING_TTL` s) and the seconds until it resets."""
        now = time.time()
        start = window_start(window, now)
        reading = self._readings.get(key)
        if reading is None or reading.start != start or time.monotonic() - reading.at > READING_TTL:
            count = await self.signals.count(key, 0, window)
            reading = self._readings[key] = _Reading(count.value, start, time.monotonic())
        return reading.value, start + window - now

    # -- account ---------------------------------------------------------------------------------

    def finish(self, ctx: RequestContext, status: str) -> None:
        """The client's request ended: queue its usage records and count its tokens and spend.

        Synchronous and cheap (no I/O): the records are written by the flusher, the counters are
        added by a background task.
        """
        target = ctx.target
        kind = bot = ""
        if target is not None:
            kind = "bot" if target.bot is not None else "model"
            bot = target.bot.id if target.bot is not None else ""
        key_id = ctx.key_id or ""
        at = ctx.ledger.started
        entries = ctx.ledger.entries.values()
        if not entries:
            provider = target.provider.id if target is not None else ""
            model = target.model if target is not None else ""
            self._pending.append(UsageRecord(at=at, request_id=ctx.request_id, workspace=ctx.workspace.id, key_id=key_id,
                                             target_kind=kind, bot=bot, provider=provider, model=model, calls=0,
                                             input_tokens=0, output_tokens=0, cached_tokens=0, cost_nanos=0,
                                             status=status))
        for e in entries:
            self._pending.append(UsageRecord(at=at, request_id=ctx.request_id, workspace=ctx.workspace.id, key_id=key_id,
                                             target_kind=kind, bot=bot, provider=e.provider, model=e.model, calls=e.calls,
                                             input_tokens=e.input_tokens, output_tokens=e.output_tokens,
                                             cached_tokens=e.cached_tokens, cost_nanos=e.cost_nanos, status=status))
        if len(self._pending) >= FLUSH_BATCH:
            self._wake.set()
        caller = self.caller_of(ctx)
        if caller is not None and caller.counts_after and entries:
            task = asyncio.get_running_loop().create_task(
                self._count_after(caller.subjects, ctx.ledger.tokens, ctx.ledger.cost_nanos))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _count_after(self, subjects: Iterable[Subject], tokens: int, cost: int) -> None:
        try:
            for subject in subjects:
                if subject.tpm and tokens:
                    await self._add(f"rl:{subject.name}:t", tokens, self.window)
                if subject.budget_nanos is not None and cost:
                    await self._add(f"sp:{subject.name}", cost, subject.period)
        except Exception as exc:  # counted best effort: a failed count must not fail anything else
            log.warning("limits: counting tokens/spend failed: %s: %s", type(exc).__name__, exc)

    async def _add(self, key: str, amount: int, window: float) -> None:
        count = await self.signals.count(key, amount, window)
        self._readings[key] = _Reading(count.value, window_start(window, time.time()), time.monotonic())

    async def flush(self) -> None:
        """Write every pending usage record now (the usage endpoint calls this before it reads)."""
        async with self._flush_lock:
            while self._pending:
                batch, self._pending = self._pending[:FLUSH_BATCH * 4], self._pending[FLUSH_BATCH * 4:]
                try:
                    await self.store.add_usage(batch)
                except BaseException:
                    self._pending[:0] = batch  # kept for the next attempt
                    raise

    async def _flush_loop(self) -> None:
        failing = False
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL)
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                if not failing:
                    log.warning("usage: writing %d records failed (%s: %s); retrying",
                                len(self._pending), type(exc).__name__, exc)
                failing = True
                if len(self._pending) > MAX_PENDING:
                    lost = len(self._pending) - MAX_PENDING
                    del self._pending[:lost]
                    self.dropped += lost
                    log.error("usage: %d records dropped: the store has not accepted writes and %d are pending",
                              lost, MAX_PENDING)
            else:
                if failing:
                    log.info("usage: records are written again")
                failing = False

    # -- admin -----------------------------------------------------------------------------------

    async def create_key(self, workspace: str, name: str, *, expires_at: int | None = None,
                         allowed_models: list[str] | None = None, limits: Limits | None = None,
                         budget: Budget | None = None) -> tuple[ManagedKey, str]:
        """Issue a key; the stored key and its secret (shown once, never stored)."""
        secret = new_key()
        limits = limits or Limits()
        key = ManagedKey(id="key_" + secrets.token_hex(8), workspace=workspace, name=name,
                         digest=hashlib.sha256(secret.encode()).hexdigest(), prefix=secret[:14],
                         created_at=int(time.time()), expires_at=expires_at, allowed_models=allowed_models,
                         rpm=limits.rpm, tpm=limits.tpm, budget_amount=None if budget is None else budget.amount,
                         budget_period=None if budget is None else budget.period)
        await self.store.create_key(key)
        await self.changed(key)  # a cached "unknown" for this digest anywhere is dropped
        return key, secret

    async def save_key(self, key: ManagedKey) -> None:
        await self.store.save_key(key)
        await self.changed(key)


def _per(window: float) -> str:
    return "minute" if window == 60 else f"{format_reset(window)} window"


__all__ = ["Access", "Caller", "Subject", "config_key_id", "format_reset"]
