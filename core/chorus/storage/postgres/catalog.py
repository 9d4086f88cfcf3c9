"""The catalog in PostgreSQL: files (with their bytes), vector stores and their files.

Same contract as the SQLite catalog (:class:`chorus.storage.catalog.Catalog`): every query is
scoped by workspace; a file's record and its bytes are written in one transaction, so a file is
either wholly there or not at all, on every instance of the deployment.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import msgspec

from chorus.storage.catalog import Catalog, FileRecord, StoreFileRecord, StoreRecord, new_id
from chorus.storage.postgres.database import Database

_json = msgspec.json.Encoder()


class PgCatalog(Catalog):
    """The catalog of a deployment, shared by every instance through one PostgreSQL schema."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- files ----------------------------------------------------------------------------------

    async def add_file(self, workspace: str, filename: str, data: bytes, purpose: str, sha256: str,
                       file_id: str | None = None) -> FileRecord:
        record = FileRecord(workspace=workspace, id=file_id or new_id("file-"), filename=filename,
                            bytes=len(data), purpose=purpose, created_at=int(time.time()), sha256=sha256)

        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO files VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (workspace, id) DO UPDATE SET "
                    "filename=excluded.filename, bytes=excluded.bytes, purpose=excluded.purpose, "
                    "created_at=excluded.created_at, sha256=excluded.sha256",
                    workspace, record.id, filename, record.bytes, purpose, record.created_at, sha256)
                await conn.execute(
                    "INSERT INTO file_blobs VALUES ($1,$2,$3) ON CONFLICT (workspace, id) DO UPDATE SET data=excluded.data",
                    workspace, record.id, data)

        await self.db.run(write)
        return record

    async def get_file(self, workspace: str, file_id: str) -> FileRecord | None:
        row = await self.db.fetchrow("SELECT * FROM files WHERE workspace=$1 AND id=$2", workspace, file_id)
        return FileRecord(**dict(row)) if row else None

    async def list_files(self, workspace: str, purpose: str | None = None) -> list[FileRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM files WHERE workspace=$1 AND ($2::text IS NULL OR purpose=$2) ORDER BY created_at, id",
            workspace, purpose)
        return [FileRecord(**dict(r)) for r in rows]

    async def delete_file(self, workspace: str, file_id: str) -> bool:
        status = await self.db.execute("DELETE FROM files WHERE workspace=$1 AND id=$2", workspace, file_id)
        return status != "DELETE 0"

    async def read_file(self, workspace: str, file_id: str) -> bytes:
        row = await self.db.fetchrow("SELECT data FROM file_blobs WHERE workspace=$1 AND id=$2", workspace, file_id)
        if row is None:
            raise FileNotFoundError(f"no bytes stored for file {file_id}")
        return bytes(row["data"])

    # -- vector stores --------------------------------------------------------------------------

    async def create_store(self, workspace: str, name: str, metadata: dict[str, Any], *,
                           store_id: str | None = None, origin: str = "api") -> StoreRecord:
        now = int(time.time())
        row = await self.db.fetchrow(
            "INSERT INTO vector_stores VALUES ($1,$2,$3,$4,$5,$6,$7) "
            "ON CONFLICT (workspace, id) DO UPDATE SET name=excluded.name RETURNING *",
            workspace, store_id or new_id("vs_"), name, now, _json.encode(metadata).decode(), origin, now)
        assert row is not None
        return _store(row)

    async def get_store(self, workspace: str, store_id: str) -> StoreRecord | None:
        row = await self.db.fetchrow("SELECT * FROM vector_stores WHERE workspace=$1 AND id=$2", workspace, store_id)
        return _store(row) if row else None

    async def list_stores(self, workspace: str) -> list[StoreRecord]:
        rows = await self.db.fetch("SELECT * FROM vector_stores WHERE workspace=$1 ORDER BY created_at, id", workspace)
        return [_store(r) for r in rows]

    async def update_store(self, workspace: str, store_id: str, name: str | None, metadata: dict[str, Any] | None) -> None:
        await self.db.execute(
            "UPDATE vector_stores SET name=COALESCE($3, name), metadata=COALESCE($4, metadata) WHERE workspace=$1 AND id=$2",
            workspace, store_id, name, _json.encode(metadata).decode() if metadata is not None else None)

    async def delete_store(self, workspace: str, store_id: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM vector_store_files WHERE workspace=$1 AND vector_store_id=$2",
                                   workspace, store_id)
                status = await conn.execute("DELETE FROM vector_stores WHERE workspace=$1 AND id=$2", workspace, store_id)
            return bool(status != "DELETE 0")

        return await self.db.run(delete)

    # -- vector store files ---------------------------------------------------------------------

    async def put_store_file(self, record: StoreFileRecord) -> None:
        await self.db.execute(
            "INSERT INTO vector_store_files VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11) "
            "ON CONFLICT (workspace, vector_store_id, file_id) DO UPDATE SET status=excluded.status, "
            "last_error=excluded.last_error, created_at=excluded.created_at, chunks=excluded.chunks, "
            "usage_bytes=excluded.usage_bytes, sha256=excluded.sha256, attributes=excluded.attributes, "
            "source=excluded.source",
            record.workspace, record.vector_store_id, record.file_id, record.status,
            _json.encode(record.last_error).decode() if record.last_error else None,
            record.created_at, record.chunks, record.usage_bytes, record.sha256,
            _json.encode(record.attributes).decode(), record.source)

    async def get_store_file(self, workspace: str, store_id: str, file_id: str) -> StoreFileRecord | None:
        row = await self.db.fetchrow(
            "SELECT * FROM vector_store_files WHERE workspace=$1 AND vector_store_id=$2 AND file_id=$3",
            workspace, store_id, file_id)
        return _store_file(row) if row else None

    async def list_store_files(self, workspace: str, store_id: str) -> list[StoreFileRecord]:
        rows = await self.db.fetch(
            "SELECT * FROM vector_store_files WHERE workspace=$1 AND vector_store_id=$2 ORDER BY created_at, file_id",
            workspace, store_id)
        return [_store_file(r) for r in rows]

    async def stores_with_file(self, workspace: str, file_id: str) -> list[str]:
        rows = await self.db.fetch(
            "SELECT vector_store_id FROM vector_store_files WHERE workspace=$1 AND file_id=$2", workspace, file_id)
        return [r[0] for r in rows]

    async def delete_store_file(self, workspace: str, store_id: str, file_id: str) -> bool:
        status = await self.db.execute(
            "DELETE FROM vector_store_files WHERE workspace=$1 AND vector_store_id=$2 AND file_id=$3",
            workspace, store_id, file_id)
        return status != "DELETE 0"


def _store(row: asyncpg.Record) -> StoreRecord:
    values = dict(row)
    values["metadata"] = msgspec.json.decode(values["metadata"])
    return StoreRecord(**values)


def _store_file(row: asyncpg.Record) -> StoreFileRecord:
    values = dict(row)
    values["last_error"] = msgspec.json.decode(values["last_error"]) if values["last_error"] else None
    values["attributes"] = msgspec.json.decode(values["attributes"])
    return StoreFileRecord(**values)
