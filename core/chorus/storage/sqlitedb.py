"""SQLite plumbing shared by the stores built on it (catalog, parked turns, signals, responses, the ``sqlite`` vector store)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def connect_wal(path: Path, *, timeout: float = 5.0) -> sqlite3.Connection:
    """An autocommit connection usable from any thread, the file in WAL mode with ``synchronous=NORMAL``.

    ``timeout`` is how long a statement waits for another connection's lock.
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        db.close()
        raise
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on an autocommit connection; ``ROLLBACK`` on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class SqliteThread:
    """One SQLite connection and the one worker thread that owns it.

    Everything done with the connection (opening it, each :meth:`run`, closing it) runs on that
    thread, one call at a time in the order submitted, so the event loop never blocks on SQLite.

    * :meth:`open` starts the thread; on it, creates ``path``'s folder, connects with
      :func:`connect_wal` (``timeout`` seconds of waiting on locks) and calls ``setup(db)``.
      Opening a started helper does nothing. If opening raises or is cancelled, the thread is
      stopped and the helper unstarted again (a connection that ``setup`` failed on is closed);
      the exception propagates.
    * :meth:`run` calls ``fn(db)`` on the thread and returns its result; whatever ``fn`` raises
      propagates unchanged. Before :meth:`open` and after :meth:`close` it raises
      ``RuntimeError("<what> is not started")``.
    * :meth:`close` closes the connection on the thread, after the calls already submitted, and
      stops the thread. Closing an unstarted helper does nothing; it may be opened again.
    """

    def __init__(self, what: str, *, thread_name: str) -> None:
        self.what = what
        self.thread_name = thread_name
        self._pool: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None  # read and written on the worker thread only

    @property
    def started(self) -> bool:
        """Whether :meth:`open` was called (it may still be running) and :meth:`close` not since."""
        return self._pool is not None

    async def open(self, path: Path, setup: Callable[[sqlite3.Connection], object], *, timeout: float = 30.0) -> None:
        if self._pool is not None:
            return
        pool = self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=self.thread_name)

        def connect() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = connect_wal(path, timeout=timeout)
            try:
                setup(db)
            except BaseException:
                db.close()
                raise
            self._db = db

        try:
            await asyncio.get_running_loop().run_in_executor(pool, connect)
        except BaseException:
            pool.shutdown(wait=False)
            self._pool = None
            raise

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._pool is None:
            raise RuntimeError(f"{self.what} is not started")

        def call() -> T:
            if self._db is None:  # only if the open that this call was queued behind failed
                raise RuntimeError(f"{self.what} is not started")
            return fn(self._db)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return

        def disconnect() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        try:
            await asyncio.get_running_loop().run_in_executor(pool, disconnect)
        finally:
            pool.shutdown(wait=False)
