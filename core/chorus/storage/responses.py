"""Stored responses, conversations and stored chat completions (the Responses and Conversations APIs).

Three kinds of records, every one keyed by ``(workspace, id)`` so another tenant's id is simply
not found:

* a **response** (``store`` true on ``POST /v1/responses``): the Response object as sent, the
  input items of its turn (``GET /v1/responses/{id}/input_items``) and its *context*, the items the
  model saw before this turn's output (the chain's earlier inputs and outputs plus this input), so
  ``previous_response_id`` continues a chain with one read;
* a **conversation** and its ordered **items** (the Conversations API, ``conversation/id=``);
* a **chat completion** (``store: true`` on ``POST /v1/chat/completions``) and its request messages.

Items are plain dicts in the OpenAI item shapes; they are stored as JSON. Two implementations:
:class:`SqliteResponseStore` (``responses.sqlite3`` in the data dir, the default) and
:class:`chorus.storage.postgres.responses.PgResponseStore` (the deployment's PostgreSQL schema).
A write returns once the record is readable by every worker and instance sharing the state, so a
follow-up sent right after a turn always finds it.
"""

from __future__ import annotations

import abc
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from chorus.contract.errors import StateUnavailable
from chorus.storage.sqlitedb import SqliteThread, immediate

T = TypeVar("T")

Item = dict[str, Any]


class StoredResponse(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    id: str
    created_at: int
    response: dict[str, Any]
    input_items: list[Item]
    context: list[Item]


class StoredConversation(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    id: str
    created_at: int
    metadata: dict[str, Any]


class StoredChat(msgspec.Struct, frozen=True, kw_only=True):
    workspace: str
    id: str
    created_at: int
    model: str
    metadata: dict[str, Any]
    completion: dict[str, Any]
    messages: list[dict[str, Any]]


class ResponseStore(abc.ABC):
    """Responses, conversations and stored chat completions of every workspace."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open what the store needs (called on startup)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release it (called on shutdown)."""

    # -- responses -------------------------------------------------------------------------------

    @abc.abstractmethod
    async def put_response(self, record: StoredResponse) -> None:
        """Store (or replace) a response; readable everywhere once this returns."""

    @abc.abstractmethod
    async def get_response(self, workspace: str, response_id: str) -> StoredResponse | None:
        """The workspace's response, or ``None``."""

    @abc.abstractmethod
    async def delete_response(self, workspace: str, response_id: str) -> bool:
        """Delete it; whether it existed."""

    # -- conversations ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_conversation(self, record: StoredConversation, items: list[Item]) -> None:
        """Create a conversation with its first items (ids already assigned)."""

    @abc.abstractmethod
    async def get_conversation(self, workspace: str, conversation_id: str) -> StoredConversation | None:
        """The workspace's conversation, or ``None``."""

    @abc.abstractmethod
    async def update_conversation(self, workspace: str, conversation_id: str, metadata: dict[str, Any]) -> bool:
        """Replace its metadata; whether it exists."""

    @abc.abstractmethod
    async def delete_conversation(self, workspace: str, conversation_id: str) -> bool:
        """Delete it and its items; whether it existed."""

    @abc.abstractmethod
    async def add_items(self, workspace: str, conversation_id: str, items: list[Item]) -> bool:
        """Append items (ids already assigned) in order; ``False`` if the conversation does not exist."""

    @abc.abstractmethod
    async def list_items(self, workspace: str, conversation_id: str) -> list[Item]:
        """Every item of the conversation, oldest first."""

    @abc.abstractmethod
    async def get_item(self, workspace: str, conversation_id: str, item_id: str) -> Item | None:
        """One item, or ``None``."""

    @abc.abstractmethod
    async def delete_item(self, workspace: str, conversation_id: str, item_id: str) -> bool:
        """Delete one item; whether it existed."""

    # -- stored chat completions -----------------------------------------------------------------

    @abc.abstractmethod
    async def put_chat(self, record: StoredChat) -> None:
        """Store a chat completion (``store: true``)."""

    @abc.abstractmethod
    async def get_chat(self, workspace: str, completion_id: str) -> StoredChat | None:
        """The workspace's stored chat completion, or ``None``."""


SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL,
    response BLOB NOT NULL, input_items BLOB NOT NULL, context BLOB NOT NULL,
    PRIMARY KEY (workspace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversations (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL, metadata BLOB NOT NULL,
    PRIMARY KEY (workspace, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS conversation_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, workspace TEXT NOT NULL, conversation_id TEXT NOT NULL,
    id TEXT NOT NULL, item BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS conversation_items_by_conversation ON conversation_items (workspace, conversation_id, seq);
CREATE TABLE IF NOT EXISTS chat_completions (
    workspace TEXT NOT NULL, id TEXT NOT NULL, created_at INTEGER NOT NULL, model TEXT NOT NULL,
    metadata BLOB NOT NULL, completion BLOB NOT NULL, messages BLOB NOT NULL,
    PRIMARY KEY (workspace, id)
) WITHOUT ROWID;
"""

_encode = msgspec.json.Encoder().encode
_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_decode_list = msgspec.json.Decoder(list[dict[str, Any]]).decode


class SqliteResponseStore(ResponseStore):
    """The store in ``<data_dir>/responses.sqlite3`` (WAL: every worker of the machine shares it).

    All SQLite work runs on one worker thread with one connection.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sqlite = SqliteThread("the response store", thread_name="chorus-responses")

    async def start(self) -> None:
        await self._unavailable_on_error(self._sqlite.open(self.path, lambda db: db.executescript(SCHEMA)))

    async def aclose(self) -> None:
        await self._sqlite.close()

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._unavailable_on_error(self._sqlite.run(fn))

    @staticmethod
    async def _unavailable_on_error(work: Awaitable[T]) -> T:
        try:
            return await work
        except sqlite3.OperationalError as exc:  # locked past the timeout, disk full, unreadable file
            raise StateUnavailable(f"The response store is unavailable ({exc}); retry shortly.") from None

    # -- responses -------------------------------------------------------------------------------

    async def put_response(self, record: StoredResponse) -> None:
        row = (record.workspace, record.id, record.created_at, _encode(record.response),
               _encode(record.input_items), _encode(record.context))

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO responses (workspace, id, created_at, response, input_items, context) "
                       "VALUES (?, ?, ?, ?, ?, ?)", row)

        await self._run(write)

    async def get_response(self, workspace: str, response_id: str) -> StoredResponse | None:
        def read(db: sqlite3.Connection) -> Any:
            return db.execute("SELECT created_at, response, input_items, context FROM responses "
                              "WHERE workspace = ? AND id = ?", (workspace, response_id)).fetchone()

        row = await self._run(read)
        if row is None:
            return None
        return StoredResponse(workspace=workspace, id=response_id, created_at=row[0], response=_decode_dict(row[1]),
                              input_items=_decode_list(row[2]), context=_decode_list(row[3]))

    async def delete_response(self, workspace: str, response_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM responses WHERE workspace = ? AND id = ?",
                              (workspace, response_id)).rowcount > 0

        return await self._run(delete)

    # -- conversations ---------------------------------------------------------------------------

    async def create_conversation(self, record: StoredConversation, items: list[Item]) -> None:
        def write(db: sqlite3.Connection) -> None:
            with immediate(db):
                db.execute("INSERT INTO conversations (workspace, id, created_at, metadata) VALUES (?, ?, ?, ?)",
                           (record.workspace, record.id, record.created_at, _encode(record.metadata)))
                db.executemany("INSERT INTO conversation_items (workspace, conversation_id, id, item) VALUES (?, ?, ?, ?)",
                               [(record.workspace, record.id, item["id"], _encode(item)) for item in items])

        await self._run(write)

    async def get_conversation(self, workspace: str, conversation_id: str) -> StoredConversation | None:
        def read(db: sqlite3.Connection) -> Any:
            return db.execute("SELECT created_at, metadata FROM conversations WHERE workspace = ? AND id = ?",
                              (workspace, conversation_id)).fetchone()

        row = await self._run(read)
        if row is None:
            return None
        return StoredConversation(workspace=workspace, id=conversation_id, created_at=row[0], metadata=_decode_dict(row[1]))

    async def update_conversation(self, workspace: str, conversation_id: str, metadata: dict[str, Any]) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            return db.execute("UPDATE conversations SET metadata = ? WHERE workspace = ? AND id = ?",
                              (_encode(metadata), workspace, conversation_id)).rowcount > 0

        return await self._run(write)

    async def delete_conversation(self, workspace: str, conversation_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            with immediate(db):
                db.execute("DELETE FROM conversation_items WHERE workspace = ? AND conversation_id = ?",
                           (workspace, conversation_id))
                return db.execute("DELETE FROM conversations WHERE workspace = ? AND id = ?",
                                  (workspace, conversation_id)).rowcount > 0

        return await self._run(delete)

    async def add_items(self, workspace: str, conversation_id: str, items: list[Item]) -> bool:
        def write(db: sqlite3.Connection) -> bool:
            with immediate(db):
                found = db.execute("SELECT 1 FROM conversations WHERE workspace = ? AND id = ?",
                                   (workspace, conversation_id)).fetchone()
                if found is None:
                    return False
                db.executemany("INSERT INTO conversation_items (workspace, conversation_id, id, item) VALUES (?, ?, ?, ?)",
                               [(workspace, conversation_id, item["id"], _encode(item)) for item in items])
                return True

        return await self._run(write)

    async def list_items(self, workspace: str, conversation_id: str) -> list[Item]:
        def read(db: sqlite3.Connection) -> list[Any]:
            return db.execute("SELECT item FROM conversation_items WHERE workspace = ? AND conversation_id = ? "
                              "ORDER BY seq", (workspace, conversation_id)).fetchall()

        return [_decode_dict(row[0]) for row in await self._run(read)]

    async def get_item(self, workspace: str, conversation_id: str, item_id: str) -> Item | None:
        def read(db: sqlite3.Connection) -> Any:
            return db.execute("SELECT item FROM conversation_items WHERE workspace = ? AND conversation_id = ? AND id = ?",
                              (workspace, conversation_id, item_id)).fetchone()

        row = await self._run(read)
        return None if row is None else _decode_dict(row[0])

    async def delete_item(self, workspace: str, conversation_id: str, item_id: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            return db.execute("DELETE FROM conversation_items WHERE workspace = ? AND conversation_id = ? AND id = ?",
                              (workspace, conversation_id, item_id)).rowcount > 0

        return await self._run(delete)

    # -- stored chat completions -----------------------------------------------------------------

    async def put_chat(self, record: StoredChat) -> None:
        row = (record.workspace, record.id, record.created_at, record.model, _encode(record.metadata),
               _encode(record.completion), _encode(record.messages))

        def write(db: sqlite3.Connection) -> None:
            db.execute("INSERT OR REPLACE INTO chat_completions (workspace, id, created_at, model, metadata, completion, "
                       "messages) VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        await self._run(write)

    async def get_chat(self, workspace: str, completion_id: str) -> StoredChat | None:
        def read(db: sqlite3.Connection) -> Any:
            return db.execute("SELECT created_at, model, metadata, completion, messages FROM chat_completions "
                              "WHERE workspace = ? AND id = ?", (workspace, completion_id)).fetchone()

        row = await self._run(read)
        if row is None:
            return None
        return StoredChat(workspace=workspace, id=completion_id, created_at=row[0], model=row[1],
                          metadata=_decode_dict(row[2]), completion=_decode_dict(row[3]), messages=_decode_list(row[4]))
