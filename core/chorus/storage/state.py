"""The one state layer: everything Chorus stores, behind typed stores, on one of two backends.

* Embedded (no ``[state] url``): SQLite files in the data dir (``catalog.sqlite3``, ``files/``,
  ``turns.sqlite3``, ``responses.sqlite3``) and file locks. Zero setup; every worker of one machine shares them.
* ``[state] url = "postgresql://..."``: one PostgreSQL schema shared by every instance of a
  deployment (asyncpg pool, migrations under an advisory lock, advisory locks).

* ``[state] redis_url`` (optional, either backend): shared counters and notifications through
  Redis first (:mod:`chorus.storage.redis_signals`), the backend's own signals when it is down.

Features reach storage only through :class:`State` (``catalog``, ``turns``, ``responses``, ``access``, ``signals``,
``try_lock``), so a new store is added once here, with both implementations.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from chorus.contract.config import Config
from chorus.storage.access import AccessStore, SqliteAccessStore
from chorus.storage.catalog import Catalog
from chorus.storage.locks import FileLocks
from chorus.storage.responses import ResponseStore, SqliteResponseStore
from chorus.storage.signals import Signals, SqliteSignals
from chorus.storage.turns import MemoryTurnStore, SqliteTurnStore, TurnStore

if TYPE_CHECKING:
    from chorus.storage.postgres.database import Database


class Locks(Protocol):
    def try_lock(self, name: str) -> AbstractAsyncContextManager[bool]: ...


class State:
    """The stores of one deployment and their lifecycle (start in order, close in reverse)."""

    def __init__(self, *, backend: Literal["sqlite", "postgresql"], catalog: Catalog, turns: TurnStore, locks: Locks,
                 signals: Signals, where: str, responses: ResponseStore, access: AccessStore,
                 database: Database | None = None) -> None:
        self.backend = backend
        self.access = access
        self.catalog = catalog
        self.turns = turns
        self.responses = responses
        self.signals = signals
        self.locks = locks
        self.where = where
        self.database = database

    @property
    def shared(self) -> bool:
        """Whether other machines can share this state (PostgreSQL) or only this one (SQLite)."""
        return self.backend == "postgresql"

    async def start(self) -> None:
        if self.database is not None:
            await self.database.start()
        await self.catalog.start()
        await self.turns.start()
        await self.responses.start()
        await self.access.start()
        await self.signals.start()

    async def aclose(self) -> None:
        await self.signals.aclose()
        await self.responses.aclose()
        await self.access.aclose()
        await self.turns.aclose()
        await self.catalog.aclose()
        if self.database is not None:
            await self.database.aclose()

    def try_lock(self, name: str) -> AbstractAsyncContextManager[bool]:
        """The deployment-wide lock ``name`` if free (yields whether it was taken)."""
        return self.locks.try_lock(name)


def open_state(config: Config, data_dir: Path) -> State:
    """The state layer ``config`` asks for (nothing is opened until :meth:`State.start`)."""
    server = config.server
    ttl = server.parked_turns_ttl_seconds
    settings = config.state
    if settings.url is not None:
        from chorus.storage.postgres.access import PgAccessStore
        from chorus.storage.postgres.catalog import PgCatalog
        from chorus.storage.postgres.database import Database
        from chorus.storage.postgres.locks import AdvisoryLocks
        from chorus.storage.postgres.responses import PgResponseStore
        from chorus.storage.postgres.signals import PgSignals
        from chorus.storage.postgres.turns import PgTurnStore

        db = Database(settings.url.get(), schema=settings.schema, min_size=settings.pool_min, max_size=settings.pool_max,
                      timeout=settings.connect_timeout, command_timeout=settings.command_timeout,
                      migrate=settings.migrate == "auto")
        turns: TurnStore = MemoryTurnStore(ttl) if server.parked_turns == "memory" else PgTurnStore(db, ttl)
        return State(backend="postgresql", catalog=PgCatalog(db), turns=turns, locks=AdvisoryLocks(db),
                     signals=_with_redis(config, PgSignals(db)), where=db.where, responses=PgResponseStore(db),
                     access=PgAccessStore(db),
                     database=db)
    from chorus.storage.sqlite_catalog import SqliteCatalog

    turns = MemoryTurnStore(ttl) if server.parked_turns == "memory" else SqliteTurnStore(data_dir / "turns.sqlite3", ttl)
    return State(backend="sqlite", catalog=SqliteCatalog(data_dir), turns=turns, locks=FileLocks(data_dir / "locks"),
                 signals=_with_redis(config, SqliteSignals(data_dir / "signals.sqlite3")), where=str(data_dir),
                 responses=SqliteResponseStore(data_dir / "responses.sqlite3"),
                 access=SqliteAccessStore(data_dir / "access.sqlite3"))


def _with_redis(config: Config, signals: Signals) -> Signals:
    """``signals`` behind Redis when ``[state] redis_url`` is set."""
    if config.state.redis_url is None:
        return signals
    from chorus.storage.redis_signals import RedisSignals

    return RedisSignals(config.state.redis_url.get(), signals, prefix=f"chorus:{config.state.schema}")


__all__ = ["Locks", "State", "open_state"]
