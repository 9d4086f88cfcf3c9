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
  or a budget is checked before the request runs, against the deployment-wide totals of its
  windows. Those live in the shared counters (:mod:`chorus.storage.signals`: Redis when
  configured), but a request does not wait for them: each process counts locally
  (:class:`Counter`: the shared total as of the last sync plus what this process added since) and
  a background task pushes the local additions and reads the new totals back every
  :data:`SYNC_INTERVAL` seconds; a counter not synced for :data:`STALE_AFTER` seconds (first use,
  new window, idle here) is re-read inline before the request is admitted. Within a process, limits
  are exact; across processes, each sees the others' traffic at most about half a second late.
  Requests are counted on arrival, tokens and spend when the request ends (every
  model call of it). Keys and workspaces without limits cost nothing here. The answer carries
  OpenAI's ``x-ratelimit-*`` headers.
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
from datetime import UTC, datetime

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
SYNC_INTERVAL = 0.2     # seconds between pushes of local counts to the shared counters (and reads back)
STALE_AFTER = 0.5       # a counter not synced for this long is re-read before a request is admitted
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

    __slots__ = ("allowed", "key_id", "subjects", "workspace")

    def __init__(self, workspace: Workspace, key_id: str, subjects: list[Subject],
                 allowed: list[str] | None = None) -> None:
        self.workspace = workspace
        self.key_id = key_id
        self.subjects = subjects
        self.allowed = allowed


class Counter:
    """One shared counter as this process sees it: the deployment's total of the current window as
    of the last sync (``base``), plus what this process added since (``pending``, then ``inflight``
    while a sync pushes it)."""

    __slots__ = ("base", "inflight", "key", "pending", "start", "synced", "used", "window")

    def __init__(self, key: str, window: float) -> None:
        self.key = key
        self.window = window
        self.start = -1
        self.base = self.pending = self.inflight = 0
        self.synced = 0.0   # monotonic time of the last sync (0: never in this window)
        self.used = 0.0     # monotonic time of the last local use

    def current(self, now: float) -> int:
        """The total of the window holding ``now`` (a new window starts from zero)."""
        start = window_start(self.window, now)
        if start != self.start:
            self.start, self.base, self.pending, self.inflight, self.synced = start, 0, 0, 0, 0.0
        return self.base + self.inflight + self.pending

    def reset_in(self, now: float) -> float:
        return self.start + self.window - now


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
        # Subscribed to key changes on the first managed-key lookup: a process that only ever saw
        # config-file keys has no cache to invalidate (and the embedded signals poll only with subscribers).
        self._listening = False
        self._counters: dict[str, Counter] = {}
        self._syncer: asyncio.Task[None] | None = None
        self._pending: list[UsageRecord] = []
        self._wake = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None
        self.dropped = 0

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_loop(), name="chorus-usage-flush")
        if self._syncer is None:
            self._syncer = asyncio.create_task(self._sync_loop(), name="chorus-limits-sync")

    async def aclose(self) -> None:
        """Push this process's counts and write every pending usage record."""
        syncer, self._syncer = self._syncer, None
        if syncer is not None:
            syncer.cancel()
            await asyncio.gather(syncer, return_exceptions=True)
        try:
            await self.sync(everything=False)
        except Exception as exc:
            log.warning("limits: the last counts could not be pushed at shutdown (%s: %s)", type(exc).__name__, exc)
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
        if not self._listening:  # the first managed-key lookup: from now on, changes must reach this cache
            self._listening = True
            self.signals.subscribe(KEYS_CHANNEL, self._invalidate)
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
        now = time.time()
        for subject in caller.subjects:
            if subject.rpm:
                counter = await self._counter(f"rl:{subject.name}:r", window)
                counter.current(now)
                counter.pending += 1
                used = counter.current(now)
                remaining = subject.rpm - used
                reset_in = counter.reset_in(now)
                if requests is None or remaining < requests[1]:
                    requests = (subject.rpm, remaining, reset_in)
                if remaining < 0 and refusal is None:
                    refusal = RateLimited(
                        f"Rate limit reached for {subject.label} on requests per {_per(window)}: limit {subject.rpm}. "
                        f"Try again in {format_reset(reset_in)}.", error_type="requests")
            if subject.tpm:
                counter = await self._counter(f"rl:{subject.name}:t", window)
                used = counter.current(now)
                remaining = subject.tpm - used
                reset_in = counter.reset_in(now)
                if tokens is None or remaining < tokens[1]:
                    tokens = (subject.tpm, remaining, reset_in)
                if remaining <= 0 and refusal is None:
                    refusal = RateLimited(
                        f"Rate limit reached for {subject.label} on tokens per {_per(window)}: limit {subject.tpm}, "
                        f"used {used}. Try again in {format_reset(reset_in)}.", error_type="tokens")
            if subject.budget_nanos is not None:
                counter = await self._counter(f"sp:{subject.name}", subject.period)
                spent = counter.current(now)
                if spent >= subject.budget_nanos and refusal is None:
                    refusal = QuotaExceeded(
                        f"The spend budget of {subject.label} is used up: {spent / NANOS:.6f} of "
                        f"{subject.budget_nanos / NANOS:.6f} USD this period; it resets in "
                        f"{format_reset(counter.reset_in(now))}.")
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

    async def _counter(self, key: str, window: float) -> Counter:
        """This process's view of a shared counter, re-read inline when not synced for :data:`STALE_AFTER` s
        (a busy counter is synced by the background task every :data:`SYNC_INTERVAL` s and never waits)."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Counter(key, window)
        counter.used = mono = time.monotonic()
        counter.current(time.time())
        if mono - counter.synced > STALE_AFTER:  # new, new window, or idle here: read the shared total first
            counter.synced = mono  # one inline read, not one per request waiting on it
            try:
                await self._sync_one(counter)
            except Exception as exc:  # the shared counters are down: count in this process until they are back
                log.warning("limits: reading %s failed (%s); counting locally", counter.key, type(exc).__name__)
        return counter

    async def _sync_one(self, counter: Counter) -> None:
        """Push the counter's local additions to the shared counter and take its new total."""
        start, pushed = counter.start, counter.pending
        counter.pending, counter.inflight = 0, counter.inflight + pushed
        try:
            count = await self.signals.count(counter.key, pushed, counter.window)
        except BaseException:
            if counter.start == start:
                counter.inflight -= pushed
                counter.pending += pushed  # pushed again next time
            raise
        if counter.start == start:  # the window did not roll meanwhile
            counter.inflight -= pushed
            counter.base = count.value - counter.inflight
            counter.synced = time.monotonic()

    async def sync(self, *, everything: bool = True) -> None:
        """Push every counter with local additions (and, with ``everything``, re-read those used since their last sync)."""
        now = time.monotonic()
        wall = time.time()
        for key, counter in list(self._counters.items()):
            counter.current(wall)
            if counter.pending or (everything and counter.used > counter.synced):  # added to, or read since
                await self._sync_one(counter)
            elif now - counter.used > 2 * max(counter.window, 60.0):
                del self._counters[key]  # idle for two windows: forgotten (re-read on next use)

    async def _sync_loop(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(SYNC_INTERVAL)
            if not self._counters:
                continue
            try:
                await self.sync()
            except Exception as exc:
                if not failing:
                    log.warning("limits: syncing counters failed (%s: %s); limits are per process until it works",
                                type(exc).__name__, exc)
                failing = True
            else:
                failing = False

    # -- account ---------------------------------------------------------------------------------

    def finish(self, ctx: RequestContext, status: str) -> None:
        """The client's request ended: queue its usage records and count its tokens and spend.

        Synchronous and cheap (no I/O): the records are written by the flusher, the counts pushed by
        the sync task.
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
        if caller is not None and caller.subjects and entries:
            now = time.time()
            tokens, cost = ctx.ledger.tokens, ctx.ledger.cost_nanos
            for subject in caller.subjects:
                if subject.tpm and tokens:
                    self._add(f"rl:{subject.name}:t", self.window, tokens, now)
                if subject.budget_nanos is not None and cost:
                    self._add(f"sp:{subject.name}", subject.period, cost, now)

    def _add(self, key: str, window: float, amount: int, now: float) -> None:
        """Add to a counter locally (the sync task pushes it)."""
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = Counter(key, window)
        counter.current(now)
        counter.pending += amount
        counter.used = time.monotonic()

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
