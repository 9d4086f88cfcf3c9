"""Deployment-wide locks for work one instance should do while the others wait or skip it.

``try_lock(name)`` is an async context manager yielding whether the lock was taken; it is never
held past the holder's life (a crashed process releases it). SQLite deployments (one machine) use
:class:`FileLocks` (``flock`` on a file in the data dir); PostgreSQL deployments use session
advisory locks (:meth:`chorus.storage.postgres.database.Database.try_lock`).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path


class FileLocks:
    """Locks shared by the processes of one machine that use the same data dir."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @asynccontextmanager
    async def try_lock(self, name: str) -> AsyncIterator[bool]:
        path = self.directory / (hashlib.sha256(name.encode()).hexdigest()[:32] + ".lock")

        def acquire() -> int | None:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            return fd

        fd = await asyncio.to_thread(acquire)
        try:
            yield fd is not None
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
