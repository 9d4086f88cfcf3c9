"""Signals on PostgreSQL: counters in the state schema, notifications through LISTEN/NOTIFY.

Every notification of a deployment travels on one PostgreSQL channel (``chorus.<schema>``) with the
application channel inside the payload. The listening connection is dedicated and re-opened (every
``retry`` seconds) when it drops; messages sent while it is down are missed, as the contract says.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import asyncpg
import msgspec

from chorus.storage.postgres.database import UNAVAILABLE, Database
from chorus.storage.signals import Count, Signals, log, window_start


class PgSignals(Signals):
    """Counters and notifications shared by every instance through the state database."""

    def __init__(self, db: Database, retry: float = 1.0) -> None:
        super().__init__()
        self.db = db
        self.retry = retry
        self.pg_channel = f"chorus.{db.schema}"
        self._listener: asyncio.Task[None] | None = None
        self._writes = 0

    async def start(self) -> None:
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(), name="chorus-signals-listen")

    async def aclose(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)

    async def count(self, key: str, amount: int, window: float) -> Count:
        now = time.time()
        start = window_start(window, now)
        self._writes += 1
        row = await self.db.fetchrow(
            "INSERT INTO counters VALUES ($1, $2, $3, $4) ON CONFLICT (key, window_start) "
            "DO UPDATE SET count = counters.count + excluded.count RETURNING count",
            key, start, amount, start + window)
        assert row is not None
        if self._writes % 256 == 0:
            await self.db.execute("DELETE FROM counters WHERE expires < $1", now)
        return Count(int(row["count"]), start + window - now)

    async def publish(self, channel: str, message: str) -> None:
        payload = msgspec.json.encode({"c": channel, "m": message}).decode()
        await self.db.execute("SELECT pg_notify($1, $2)", self.pg_channel, payload)

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            decoded = msgspec.json.decode(payload)
            self._deliver(str(decoded["c"]), str(decoded["m"]))
        except (msgspec.DecodeError, KeyError, TypeError):
            log.warning("signals: ignored a malformed notification on %s", self.pg_channel)

    async def _listen(self) -> None:
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.db.url, timeout=self.db.timeout)
                await conn.add_listener(self.pg_channel, self._on_notify)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, done=closed: done.set())
                await closed.wait()
                log.warning("signals: the LISTEN connection to %s closed; reconnecting", self.db.where)
            except UNAVAILABLE as exc:
                log.warning("signals: cannot LISTEN on %s (%s); retrying", self.db.where, type(exc).__name__)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(self.retry)
