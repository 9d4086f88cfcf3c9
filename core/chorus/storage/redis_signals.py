"""Signals on Redis (``[state] redis_url``), in front of the state store's own signals.

Counters are ``INCRBY`` + ``EXPIRE`` on ``chorus:<schema>:c:<key>:<window start>``; notifications are
Redis pub/sub on ``chorus:<schema>:n:<channel>``. Redis is an accelerator, never a single point of
failure: every Redis call is bounded by ``timeout`` seconds, and while Redis is unreachable
counters and notifications go to the fallback (the SQLite or PostgreSQL signals), one warning
logged per outage; Redis is tried again ``retry`` seconds later. Subscribers listen on both, so a
notification published through either reaches them (a message id drops the duplicate when it
arrives through both). During an outage, counters are split between Redis and the fallback:
limits are approximate until Redis is back (see docs/deployment.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

from chorus.storage.signals import Count, Signals, log, window_start


class RedisSignals(Signals):
    """Redis first, ``fallback`` while Redis is down."""

    def __init__(self, url: str, fallback: Signals, *, prefix: str = "chorus", timeout: float = 0.5,
                 retry: float = 5.0) -> None:
        super().__init__()
        self.url = url
        self.fallback = fallback
        self.prefix = prefix
        self.timeout = timeout
        self.retry = retry
        self._client: redis.Redis | None = None
        self._subscriber: redis.Redis | None = None  # pub/sub waits for messages: no socket timeout
        self._listening_failed = False
        self._down_until = 0.0
        self._listener: asyncio.Task[None] | None = None
        self._seen: dict[str, None] = {}

    async def start(self) -> None:
        self._client = redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        self._subscriber = redis.Redis.from_url(self.url, socket_connect_timeout=self.timeout, health_check_interval=5)
        await self.fallback.start()
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="chorus-signals-redis")

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
        for client in (self._client, self._subscriber):
            if client is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout * 4):
                        await client.aclose()
        self._client = self._subscriber = None
        await self.fallback.aclose()

    def subscribe(self, channel: str, callback: Any) -> None:
        super().subscribe(channel, callback)
        self.fallback.subscribe(channel, self._from_fallback(channel))

    # -- Redis health --------------------------------------------------------------------------

    @property
    def redis_up(self) -> bool:
        return time.monotonic() >= self._down_until

    def _down(self, exc: BaseException) -> None:
        if self.redis_up:
            log.warning("signals: Redis at %s unreachable (%s); counters and notifications use the state store "
                        "until it is back", _redact(self.url), type(exc).__name__)
        self._down_until = time.monotonic() + self.retry

    def _up(self) -> None:
        if self._down_until:
            log.info("signals: Redis at %s is back", _redact(self.url))
            self._down_until = 0.0

    # -- counters and notifications --------------------------------------------------------------

    async def count(self, key: str, amount: int, window: float) -> Count:
        if self.redis_up and self._client is not None:
            now = time.time()
            start = window_start(window, now)
            name = f"{self.prefix}:c:{key}:{start}"
            try:
                async with asyncio.timeout(self.timeout * 2):
                    pipe = self._client.pipeline(transaction=False)
                    pipe.incrby(name, amount)
                    pipe.expire(name, int(window) + 1)
                    total, _ = await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                self._up()
                return Count(int(total), start + window - now)
        return await self.fallback.count(key, amount, window)

    async def publish(self, channel: str, message: str) -> None:
        tagged = f"{secrets.token_hex(6)}:{message}"
        if self.redis_up and self._client is not None:
            try:
                async with asyncio.timeout(self.timeout * 2):
                    await self._client.publish(f"{self.prefix}:n:{channel}", tagged)
            except (RedisError, OSError, TimeoutError) as exc:
                self._down(exc)
            else:
                self._up()
                return
        await self.fallback.publish(channel, tagged)

    def _once(self, channel: str, tagged: str) -> None:
        """Deliver a tagged message unless it already arrived by the other path."""
        tag, _, message = tagged.partition(":")
        if tag in self._seen:
            return
        self._seen[tag] = None
        if len(self._seen) > 4096:
            del self._seen[next(iter(self._seen))]
        self._deliver(channel, message)

    def _from_fallback(self, channel: str) -> Any:
        return lambda tagged: self._once(channel, tagged)

    async def _listen(self) -> None:
        prefix = f"{self.prefix}:n:"
        while True:
            pubsub = None
            try:
                if self._subscriber is None:
                    return
                pubsub = self._subscriber.pubsub()
                await pubsub.psubscribe(prefix + "*")
                if self._listening_failed:
                    log.info("signals: listening on Redis again")
                    self._listening_failed = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "pmessage":
                        continue
                    channel = _text(message["channel"])[len(prefix):]
                    self._once(channel, _text(message["data"]))
            except (RedisError, OSError) as exc:
                if not self._listening_failed:
                    log.warning("signals: cannot listen on Redis (%s); notifications arrive through the state store",
                                type(exc).__name__)
                    self._listening_failed = True
            finally:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(self.timeout * 4):
                            await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
            await asyncio.sleep(min(self.retry, 1.0))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _redact(url: str) -> str:
    head, sep, tail = url.partition("@")
    return f"{head.split('//')[0]}//{tail}" if sep else url
