"""Signals: shared counters and cross-instance notifications.

What limits and revocations need (rate-limit windows, "key X was revoked" seen by every worker and
instance within a second). Three implementations behind one interface:

* :class:`SqliteSignals` (embedded default): ``<data_dir>/signals.sqlite3``, shared by the
  processes of one machine; notifications are polled every ``poll_interval`` seconds.
* :class:`chorus.storage.postgres.signals.PgSignals` (``[state] url``): counters in the state
  schema, notifications through ``LISTEN``/``NOTIFY``.
* :class:`chorus.storage.redis_signals.RedisSignals` (``[state] redis_url``): counters with
  ``INCRBY``/``EXPIRE``, notifications through pub/sub, in front of one of the above: while Redis is
  unreachable, both fall back to the state store (counted there, published there) and a warning is
  logged once per outage; no call waits longer than Redis's socket timeout.

Counters are fixed windows: ``count(key, amount, window)`` adds ``amount`` to the window of
``window`` seconds that contains now and returns the window's total and the seconds until it
resets. Notifications are at-most-once and best effort: a subscriber that is down misses them, so
consumers also re-read the source of truth now and then.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from chorus.storage.sqlitedb import SqliteThread, immediate

log = logging.getLogger("chorus.state")
Callback = Callable[[str], None]


class Count(msgspec.Struct, frozen=True):
    """A counter's total in the current window and the seconds until the window resets."""

    value: int
    reset_in: float


def window_start(window: float, now: float) -> int:
    """The start (epoch seconds, whole) of the fixed window of ``window`` seconds holding ``now``."""
    return int(now // window * window)


class Signals(abc.ABC):
    """Shared counters and notifications of a deployment."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[Callback]] = {}

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open what the signals need (called on startup)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release it (called on shutdown)."""

    @abc.abstractmethod
    async def count(self, key: str, amount: int, window: float) -> Count:
        """Add ``amount`` to ``key``'s current window of ``window`` seconds; the new total."""

    @abc.abstractmethod
    async def publish(self, channel: str, message: str) -> None:
        """Send ``message`` to every subscriber of ``channel`` in the deployment (this process too)."""

    def subscribe(self, channel: str, callback: Callback) -> None:
        """Call ``callback(message)`` on the event loop for every message published on ``channel``."""
        self._subscribers.setdefault(channel, []).append(callback)

    def _deliver(self, channel: str, message: str) -> None:
        for callback in self._subscribers.get(channel, ()):
            try:
                callback(message)
            except Exception:  # a broken subscriber must not stop delivery to the others
                log.exception("signals: a subscriber of %s failed", channel)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (
    key TEXT NOT NULL, window_start INTEGER NOT NULL, count INTEGER NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (key, window_start)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL, message TEXT NOT NULL, at REAL NOT NULL
);
"""


class SqliteSignals(Signals):
    """Signals of one machine: a SQLite file every process with the same data dir shares."""

    def __init__(self, path: Path, poll_interval: float = 0.25, keep_messages: float = 60.0) -> None:
        super().__init__()
        self.path = path
        self.poll_interval = poll_interval
        self.keep_messages = keep_messages
        self._sqlite = SqliteThread("the signals store", thread_name="chorus-signals")
        self._poller: asyncio.Task[None] | None = None
        self._last_id = 0
        self._writes = 0
        self._polls = 0

    async def start(self) -> None:
        if self._sqlite.started:
            return
        await self._sqlite.open(self.path, self._setup)
        self._poller = asyncio.create_task(self._poll(), name="chorus-signals-poll")

    def _setup(self, db: sqlite3.Connection) -> None:
        db.executescript(_SCHEMA)
        self._last_id = db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]

    async def aclose(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
        await self._sqlite.close()

    async def count(self, key: str, amount: int, window: float) -> Count:
        now = time.time()
        start = window_start(window, now)
        self._writes += 1
        prune = self._writes % 256 == 0

        def add(db: sqlite3.Connection) -> int:
            with immediate(db):
                (total,) = db.execute(
                    "INSERT INTO counters VALUES (?, ?, ?, ?) ON CONFLICT (key, window_start) "
                    "DO UPDATE SET count = count + excluded.count RETURNING count",
                    (key, start, amount, start + window)).fetchone()
                if prune:
                    db.execute("DELETE FROM counters WHERE expires < ?", (now,))
            return int(total)

        return Count(await self._sqlite.run(add), start + window - now)

    async def publish(self, channel: str, message: str) -> None:
        def insert(db: sqlite3.Connection) -> None:
            with immediate(db):
                db.execute("INSERT INTO messages (channel, message, at) VALUES (?, ?, ?)", (channel, message, time.time()))

        await self._sqlite.run(insert)

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self._subscribers:
                continue
            channels = list(self._subscribers)
            self._polls += 1
            prune = self._polls % 240 == 0  # about once a minute

            def read(db: sqlite3.Connection, channels: list[str] = channels, prune: bool = prune) -> list[tuple[int, str, str]]:
                rows = db.execute(
                    f"SELECT id, channel, message FROM messages WHERE id > ? AND channel IN ({','.join('?' * len(channels))}) "
                    "ORDER BY id", (self._last_id, *channels)).fetchall()
                if prune:
                    with immediate(db):
                        db.execute("DELETE FROM messages WHERE at < ?", (time.time() - self.keep_messages,))
                return rows

            try:
                rows = await self._sqlite.run(read)
            except sqlite3.Error as exc:
                log.warning("signals: reading %s failed: %s", self.path, exc)
                continue
            for message_id, channel, message in rows:
                self._last_id = max(self._last_id, message_id)
                self._deliver(channel, message)
