"""Managed API keys and usage records: the access store of the state layer.

* Keys issued through the admin API (``/admin/v1``). Only the SHA-256 digest of a key's secret is
  stored (hex, unique); a key also has an id (``key_...``), a short non-secret ``prefix`` for people
  to recognise it, its workspace, an optional expiry, an optional allow-list of model selectors
  (globs), optional limits and budget, and ``revoked_at`` once revoked (revoked keys are kept so
  usage stays attributable).
* Usage records: one row per client request and ``provider/model`` it called (hidden tool steps
  and team members included), with tokens, cost in nano-USD and the request's status. Written in
  batches (:meth:`AccessStore.add_usage`); summed by :meth:`AccessStore.usage`.

Two implementations: :class:`SqliteAccessStore` (``<data_dir>/access.sqlite3``) here and
:class:`chorus.storage.postgres.access.PgAccessStore`.
"""

from __future__ import annotations

import abc
import asyncio
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import msgspec

from chorus.storage.sqlitedb import connect_wal, immediate

T = TypeVar("T")

GroupBy = Literal["workspace", "key", "bot", "model"]
GROUP_COLUMNS: dict[str, str] = {"workspace": "workspace", "key": "key_id", "bot": "bot", "model": "provider || '/' || model"}


class ManagedKey(msgspec.Struct, kw_only=True):
    """A key issued through the admin API (never its secret: ``digest`` is SHA-256 hex)."""

    id: str
    workspace: str
    name: str
    digest: str
    prefix: str
    created_at: int
    expires_at: int | None = None
    revoked_at: int | None = None
    allowed_models: list[str] | None = None
    rpm: int | None = None
    tpm: int | None = None
    budget_amount: float | None = None
    budget_period: str | None = None


class UsageRecord(msgspec.Struct, kw_only=True, array_like=True):
    """What one request spent on one ``provider/model`` (``provider``/``model`` empty: no model call)."""

    at: float
    request_id: str
    workspace: str
    key_id: str
    target_kind: str
    bot: str
    provider: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_nanos: int
    status: str


class UsageGroup(msgspec.Struct, kw_only=True):
    """Totals of one group of usage records."""

    group: str
    requests: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_nanos: int


KEY_COLUMNS = ("id", "workspace", "name", "digest", "prefix", "created_at", "expires_at", "revoked_at",
               "allowed_models", "rpm", "tpm", "budget_amount", "budget_period")
USAGE_COLUMNS = ("at", "request_id", "workspace", "key_id", "target_kind", "bot", "provider", "model", "calls",
                 "input_tokens", "output_tokens", "cached_tokens", "cost_nanos", "status")


def key_row(key: ManagedKey) -> tuple[Any, ...]:
    """``key`` as a row of :data:`KEY_COLUMNS` (the allow-list as JSON text)."""
    values = msgspec.structs.asdict(key)
    allowed = key.allowed_models
    values["allowed_models"] = None if allowed is None else msgspec.json.encode(allowed).decode()
    return tuple(values[c] for c in KEY_COLUMNS)


def key_from_row(row: Sequence[Any]) -> ManagedKey:
    values = dict(zip(KEY_COLUMNS, row, strict=True))
    allowed = values["allowed_models"]
    values["allowed_models"] = None if allowed is None else msgspec.json.decode(allowed, type=list[str])
    return ManagedKey(**values)


class AccessStore(abc.ABC):
    """Managed keys and usage records of a deployment."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open the store (called on startup)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Close it (called on shutdown)."""

    @abc.abstractmethod
    async def create_key(self, key: ManagedKey) -> None:
        """Store a new key."""

    @abc.abstractmethod
    async def key_by_digest(self, digest: str) -> ManagedKey | None:
        """The key whose secret has this SHA-256 hex digest (revoked and expired ones too)."""

    @abc.abstractmethod
    async def get_key(self, workspace: str, key_id: str) -> ManagedKey | None:
        """The key ``key_id`` of ``workspace``; another workspace's key is ``None`` too."""

    @abc.abstractmethod
    async def list_keys(self, workspace: str) -> list[ManagedKey]:
        """Every key of ``workspace``, oldest first."""

    @abc.abstractmethod
    async def save_key(self, key: ManagedKey) -> None:
        """Replace the stored key with the same id and workspace (digest and id never change)."""

    @abc.abstractmethod
    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        """Append usage records (one transaction)."""

    @abc.abstractmethod
    async def usage(self, group_by: GroupBy, start: float, end: float,
                    workspace: str | None = None) -> list[UsageGroup]:
        """Totals per group of the records with ``start <= at < end`` (of one workspace if given)."""


_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY, workspace TEXT NOT NULL, name TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL, created_at INTEGER NOT NULL, expires_at INTEGER, revoked_at INTEGER,
    allowed_models TEXT, rpm INTEGER, tpm INTEGER, budget_amount REAL, budget_period TEXT
);
CREATE INDEX IF NOT EXISTS api_keys_by_workspace ON api_keys (workspace, created_at);
CREATE TABLE IF NOT EXISTS usage_records (
    at REAL NOT NULL, request_id TEXT NOT NULL, workspace TEXT NOT NULL, key_id TEXT NOT NULL,
    target_kind TEXT NOT NULL, bot TEXT NOT NULL, provider TEXT NOT NULL, model TEXT NOT NULL,
    calls INTEGER NOT NULL, input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL,
    cached_tokens INTEGER NOT NULL, cost_nanos INTEGER NOT NULL, status TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS usage_records_at ON usage_records (at);
"""


def usage_query(group_by: GroupBy, workspace: str | None, placeholder: Callable[[int], str]) -> str:
    """The summary query (``placeholder(n)`` is the n-th parameter: ``?`` or ``$n``)."""
    column = GROUP_COLUMNS[group_by]
    where = f"at >= {placeholder(1)} AND at < {placeholder(2)}"
    if workspace is not None:
        where += f" AND workspace = {placeholder(3)}"
    return (f"SELECT {column} AS grp, count(DISTINCT request_id), sum(input_tokens), sum(output_tokens), "
            f"sum(cached_tokens), sum(cost_nanos) FROM usage_records WHERE {where} GROUP BY grp ORDER BY grp")


def groups(rows: Sequence[Sequence[Any]]) -> list[UsageGroup]:
    return [UsageGroup(group=str(r[0]), requests=int(r[1]), input_tokens=int(r[2] or 0), output_tokens=int(r[3] or 0),
                       cached_tokens=int(r[4] or 0), cost_nanos=int(r[5] or 0)) for r in rows]


class SqliteAccessStore(AccessStore):
    """Keys and usage in ``<data_dir>/access.sqlite3`` (shared by the workers of one machine)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    async def start(self) -> None:
        def open_db() -> None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = connect_wal(self.path, timeout=30)
            db.executescript(_SCHEMA)
            self._db = db

        if self._db is None:
            await asyncio.to_thread(open_db)

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                if self._db is None:
                    raise RuntimeError("the access store is not started")
                return fn(self._db)

        return await asyncio.to_thread(locked)

    async def create_key(self, key: ManagedKey) -> None:
        marks = ", ".join("?" * len(KEY_COLUMNS))
        await self._run(lambda db: db.execute(f"INSERT INTO api_keys VALUES ({marks})", key_row(key)))

    async def key_by_digest(self, digest: str) -> ManagedKey | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys WHERE digest = ?", (digest,)).fetchone())
        return None if row is None else key_from_row(row)

    async def get_key(self, workspace: str, key_id: str) -> ManagedKey | None:
        row = await self._run(lambda db: db.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys WHERE workspace = ? AND id = ?",
            (workspace, key_id)).fetchone())
        return None if row is None else key_from_row(row)

    async def list_keys(self, workspace: str) -> list[ManagedKey]:
        rows = await self._run(lambda db: db.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys WHERE workspace = ? ORDER BY created_at, id",
            (workspace,)).fetchall())
        return [key_from_row(r) for r in rows]

    async def save_key(self, key: ManagedKey) -> None:
        row = key_row(key)
        sets = ", ".join(f"{c} = ?" for c in KEY_COLUMNS[2:])
        await self._run(lambda db: db.execute(
            f"UPDATE api_keys SET {sets} WHERE id = ? AND workspace = ?", (*row[2:], key.id, key.workspace)))

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        rows = [msgspec.structs.astuple(r) for r in records]
        marks = ", ".join("?" * len(USAGE_COLUMNS))

        def insert(db: sqlite3.Connection) -> None:
            with immediate(db):
                db.executemany(f"INSERT INTO usage_records ({', '.join(USAGE_COLUMNS)}) VALUES ({marks})", rows)

        await self._run(insert)

    async def usage(self, group_by: GroupBy, start: float, end: float,
                    workspace: str | None = None) -> list[UsageGroup]:
        query = usage_query(group_by, workspace, lambda n: "?")
        params: tuple[Any, ...] = (start, end) if workspace is None else (start, end, workspace)
        return groups(await self._run(lambda db: db.execute(query, params).fetchall()))
