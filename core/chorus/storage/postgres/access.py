"""Managed keys and usage records in PostgreSQL (tables of migration 4), shared by every instance."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from chorus.storage.access import (
    KEY_COLUMNS,
    USAGE_COLUMNS,
    AccessStore,
    GroupBy,
    ManagedKey,
    UsageGroup,
    UsageRecord,
    groups,
    key_from_row,
    key_row,
    usage_query,
)
from chorus.storage.postgres.database import Database

_SELECT = f"SELECT {', '.join(KEY_COLUMNS)} FROM api_keys"


class PgAccessStore(AccessStore):
    """Keys and usage in the deployment's PostgreSQL schema."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_key(self, key: ManagedKey) -> None:
        marks = ", ".join(f"${i}" for i in range(1, len(KEY_COLUMNS) + 1))
        await self.db.execute(f"INSERT INTO api_keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})", *key_row(key))

    async def key_by_digest(self, digest: str) -> ManagedKey | None:
        row = await self.db.fetchrow(f"{_SELECT} WHERE digest = $1", digest)
        return None if row is None else key_from_row(tuple(row))

    async def get_key(self, workspace: str, key_id: str) -> ManagedKey | None:
        row = await self.db.fetchrow(f"{_SELECT} WHERE workspace = $1 AND id = $2", workspace, key_id)
        return None if row is None else key_from_row(tuple(row))

    async def list_keys(self, workspace: str) -> list[ManagedKey]:
        rows = await self.db.fetch(f"{_SELECT} WHERE workspace = $1 ORDER BY created_at, id", workspace)
        return [key_from_row(tuple(r)) for r in rows]

    async def save_key(self, key: ManagedKey) -> None:
        row = key_row(key)
        sets = ", ".join(f"{c} = ${i}" for i, c in enumerate(KEY_COLUMNS[2:], start=1))
        n = len(KEY_COLUMNS) - 2
        await self.db.execute(f"UPDATE api_keys SET {sets} WHERE id = ${n + 1} AND workspace = ${n + 2}",
                              *row[2:], key.id, key.workspace)

    async def add_usage(self, records: Sequence[UsageRecord]) -> None:
        rows = [msgspec.structs.astuple(r) for r in records]
        marks = ", ".join(f"${i}" for i in range(1, len(USAGE_COLUMNS) + 1))

        async def insert(conn: Any) -> None:
            await conn.executemany(f"INSERT INTO usage_records ({', '.join(USAGE_COLUMNS)}) VALUES ({marks})", rows)

        await self.db.run(insert)

    async def usage(self, group_by: GroupBy, start: float, end: float,
                    workspace: str | None = None) -> list[UsageGroup]:
        query = usage_query(group_by, workspace, lambda n: f"${n}")
        args: tuple[Any, ...] = (start, end) if workspace is None else (start, end, workspace)
        return groups([tuple(r) for r in await self.db.fetch(query, *args)])
