"""The catalog: uploaded files (and their bytes), vector stores (datasets) and their files.

Chunks live in the vector store driver; the catalog holds what the Files and Vector Stores APIs
show and what dataset syncs compare against. Two implementations: :mod:`chorus.storage.sqlite_catalog`
(the embedded default, in the data dir) and :mod:`chorus.storage.postgres.catalog` (shared by
every instance of a deployment). Every method is scoped by workspace: another tenant's object is
simply not found.
"""

from __future__ import annotations

import abc
import secrets
from typing import Any

import msgspec


def new_id(prefix: str) -> str:
    """An OpenAI-style random id (``file-...``, ``vs_...``)."""
    return prefix + secrets.token_hex(12)


class FileRecord(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int
    sha256: str


class StoreRecord(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    id: str
    name: str
    created_at: int
    metadata: dict[str, Any]
    origin: str
    last_active_at: int | None


class StoreFileRecord(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    vector_store_id: str
    file_id: str
    status: str
    last_error: dict[str, Any] | None
    created_at: int
    chunks: int
    usage_bytes: int
    sha256: str
    attributes: dict[str, Any]
    source: str


class Catalog(abc.ABC):
    """Files, vector stores and vector store files of every workspace."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open what the catalog needs (called on startup)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release it (called on shutdown)."""

    # -- files ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def add_file(self, workspace: str, filename: str, data: bytes, purpose: str, sha256: str,
                       file_id: str | None = None) -> FileRecord:
        """Store the bytes and their record together (or neither); replaces ``file_id`` when given."""

    @abc.abstractmethod
    async def get_file(self, workspace: str, file_id: str) -> FileRecord | None:
        """The file's record, or ``None``."""

    @abc.abstractmethod
    async def list_files(self, workspace: str, purpose: str | None = None) -> list[FileRecord]:
        """The workspace's files (of ``purpose`` when given), oldest first."""

    @abc.abstractmethod
    async def delete_file(self, workspace: str, file_id: str) -> bool:
        """Delete the record and the bytes; whether there was such a file."""

    @abc.abstractmethod
    async def read_file(self, workspace: str, file_id: str) -> bytes:
        """The file's bytes."""

    # -- vector stores --------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_store(self, workspace: str, name: str, metadata: dict[str, Any], *,
                           store_id: str | None = None, origin: str = "api") -> StoreRecord:
        """Create a store (``origin`` ``"config"`` for datasets declared in configuration); an
        existing ``store_id`` keeps its record and takes the new name."""

    @abc.abstractmethod
    async def get_store(self, workspace: str, store_id: str) -> StoreRecord | None:
        """The store's record, or ``None``."""

    @abc.abstractmethod
    async def list_stores(self, workspace: str) -> list[StoreRecord]:
        """The workspace's stores, oldest first."""

    @abc.abstractmethod
    async def update_store(self, workspace: str, store_id: str, name: str | None, metadata: dict[str, Any] | None) -> None:
        """Change the name and/or the metadata (``None`` leaves it)."""

    @abc.abstractmethod
    async def delete_store(self, workspace: str, store_id: str) -> bool:
        """Delete the store and its file entries in one transaction; whether it existed."""

    # -- vector store files ---------------------------------------------------------------------

    @abc.abstractmethod
    async def put_store_file(self, record: StoreFileRecord) -> None:
        """Insert or replace a file's entry in a store."""

    @abc.abstractmethod
    async def get_store_file(self, workspace: str, store_id: str, file_id: str) -> StoreFileRecord | None:
        """One file's entry in a store, or ``None``."""

    @abc.abstractmethod
    async def list_store_files(self, workspace: str, store_id: str) -> list[StoreFileRecord]:
        """A store's file entries, oldest first."""

    @abc.abstractmethod
    async def stores_with_file(self, workspace: str, file_id: str) -> list[str]:
        """Ids of the stores that hold ``file_id``."""

    @abc.abstractmethod
    async def delete_store_file(self, workspace: str, store_id: str, file_id: str) -> bool:
        """Remove a file's entry from a store; whether it was there."""
