"""Deployment-wide locks on PostgreSQL session advisory locks."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from chorus.storage.postgres.database import Database


class AdvisoryLocks:
    """``try_lock(name)``: a session advisory lock of the deployment's schema, held on one connection."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def try_lock(self, name: str) -> AbstractAsyncContextManager[bool]:
        return self.db.try_lock(name)
