"""Connection and thread handling of the ``sqlite`` store: one writer, pooled readers, worker threads."""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from chorus_plugins.sqlite_store.dense import HAS_NUMPY
from chorus_plugins.sqlite_store.schema import ensure_schema
from chorus_plugins.sqlite_store.settings import SqliteVectorStoreSettings

log = logging.getLogger("chorus.vectorstore.sqlite")

T = TypeVar("T")


class SqliteConnections:
    """The store's SQLite connections and worker threads (a base class of the driver).

    One writer connection on a one-thread executor, and a pool of reader connections, one per
    reader thread, plus a compute pool for numpy work; the event loop never blocks on them. The
    subclass sets ``path`` and ``settings`` and calls :meth:`_init_connections`.
    """

    path: Path
    settings: SqliteVectorStoreSettings
    tokenizer: str  # of the store's FTS5 indexes, as the file was created (set by open)

    def _init_connections(self) -> None:
        self._writer: sqlite3.Connection | None = None
        self._write_lock = threading.Lock()
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all_readers: list[sqlite3.Connection] = []
        self._write_pool: ThreadPoolExecutor | None = None
        self._read_pool: ThreadPoolExecutor | None = None
        self._compute_pool: ThreadPoolExecutor | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                             timeout=self.settings.busy_timeout)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-32768")
        return db

    def open(self) -> None:
        """Create the file and schema and open the connections (synchronous; :meth:`start` wraps it)."""
        if self._writer is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = self._connect()
        try:
            writer.execute("PRAGMA journal_mode=WAL")
            self.tokenizer = ensure_schema(writer, self.path, self.settings.tokenizer)
        except BaseException:
            writer.close()
            raise
        self._writer = writer
        for _ in range(self.settings.readers):
            reader = self._connect()
            self._all_readers.append(reader)
            self._readers.put(reader)
        self._write_pool = ThreadPoolExecutor(1, thread_name_prefix="chorus-vs-write")
        self._read_pool = ThreadPoolExecutor(self.settings.readers, thread_name_prefix="chorus-vs-read")
        self._compute_pool = ThreadPoolExecutor(self.settings.readers, thread_name_prefix="chorus-vs-dense")
        if self.settings.dense and not HAS_NUMPY:
            log.warning("numpy is not installed: vectors are stored but searches are lexical only")

    def close(self) -> None:
        """Close every connection and worker thread (idempotent)."""
        for pool in (self._write_pool, self._read_pool, self._compute_pool):
            if pool is not None:
                pool.shutdown(wait=True)
        self._write_pool = self._read_pool = self._compute_pool = None
        for reader in self._all_readers:
            reader.close()
        self._all_readers.clear()
        self._readers = queue.SimpleQueue()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._write_pool is None:
            raise RuntimeError("vector store is not started")

        def run() -> T:
            with self._write_lock:
                assert self._writer is not None
                return fn(self._writer)

        return await asyncio.get_running_loop().run_in_executor(self._write_pool, run)

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._read_pool is None:
            raise RuntimeError("vector store is not started")

        def run() -> T:
            db = self._readers.get()
            try:
                return fn(db)
            finally:
                if db.in_transaction:
                    db.rollback()
                self._readers.put(db)

        return await asyncio.get_running_loop().run_in_executor(self._read_pool, run)

    @contextmanager
    def _snapshot(self, db: sqlite3.Connection) -> Iterator[None]:
        db.execute("BEGIN")
        try:
            yield
        finally:
            db.rollback()
