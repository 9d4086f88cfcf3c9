"""Responses, conversations and stored chat completions in PostgreSQL (migration 3).

The same contract as :class:`chorus.storage.responses.SqliteResponseStore`: every query scoped by
workspace, a write readable by every instance once it returns. JSON is stored as text (PostgreSQL
cannot hold a NUL in text: such a client value is a 400 ``invalid_characters``, see
:meth:`Database.connection`).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec

from chorus.storage.postgres.database import Database
from chorus.storage.responses import Item, ResponseStore, StoredChat, StoredConversation, StoredResponse

_encode = msgspec.json.Encoder().encode
_decode_dict = msgspec.json.Decoder(dict[str, Any]).decode
_decode_list = msgspec.json.Decoder(list[dict[str, Any]]).decode


def _text(value: Any) -> str:
    return _encode(value).decode()


class PgResponseStore(ResponseStore):
    """The store in the deployment's PostgreSQL schema."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- responses -------------------------------------------------------------------------------

    async def put_response(self, record: StoredResponse) -> None:
        await self.db.execute(
            "INSERT INTO responses (workspace, id, created_at, response, input_items, context) VALUES ($1,$2,$3,$4,$5,$6) "
            "ON CONFLICT (workspace, id) DO UPDATE SET created_at=excluded.created_at, response=excluded.response, "
            "input_items=excluded.input_items, context=excluded.context",
            record.workspace, record.id, record.created_at, _text(record.response), _text(record.input_items),
            _text(record.context))

    async def get_response(self, workspace: str, response_id: str) -> StoredResponse | None:
        row = await self.db.fetchrow(
            "SELECT created_at, response, input_items, context FROM responses WHERE workspace=$1 AND id=$2",
            workspace, response_id)
        if row is None:
            return None
        return StoredResponse(workspace=workspace, id=response_id, created_at=row["created_at"],
                              response=_decode_dict(row["response"]), input_items=_decode_list(row["input_items"]),
                              context=_decode_list(row["context"]))

    async def delete_response(self, workspace: str, response_id: str) -> bool:
        status = await self.db.execute("DELETE FROM responses WHERE workspace=$1 AND id=$2", workspace, response_id)
        return status != "DELETE 0"

    # -- conversations ---------------------------------------------------------------------------

    async def create_conversation(self, record: StoredConversation, items: list[Item]) -> None:
        async def write(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute("INSERT INTO conversations (workspace, id, created_at, metadata) VALUES ($1,$2,$3,$4)",
                                   record.workspace, record.id, record.created_at, _text(record.metadata))
                if items:
                    await conn.executemany(
                        "INSERT INTO conversation_items (workspace, conversation_id, id, item) VALUES ($1,$2,$3,$4)",
                        [(record.workspace, record.id, item["id"], _text(item)) for item in items])

        await self.db.run(write)

    async def get_conversation(self, workspace: str, conversation_id: str) -> StoredConversation | None:
        row = await self.db.fetchrow("SELECT created_at, metadata FROM conversations WHERE workspace=$1 AND id=$2",
                                     workspace, conversation_id)
        if row is None:
            return None
        return StoredConversation(workspace=workspace, id=conversation_id, created_at=row["created_at"],
                                  metadata=_decode_dict(row["metadata"]))

    async def update_conversation(self, workspace: str, conversation_id: str, metadata: dict[str, Any]) -> bool:
        status = await self.db.execute("UPDATE conversations SET metadata=$3 WHERE workspace=$1 AND id=$2",
                                       workspace, conversation_id, _text(metadata))
        return status != "UPDATE 0"

    async def delete_conversation(self, workspace: str, conversation_id: str) -> bool:
        async def delete(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                await conn.execute("DELETE FROM conversation_items WHERE workspace=$1 AND conversation_id=$2",
                                   workspace, conversation_id)
                status = await conn.execute("DELETE FROM conversations WHERE workspace=$1 AND id=$2",
                                            workspace, conversation_id)
                return str(status) != "DELETE 0"

        return await self.db.run(delete)

    async def add_items(self, workspace: str, conversation_id: str, items: list[Item]) -> bool:
        async def write(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                found = await conn.fetchval("SELECT 1 FROM conversations WHERE workspace=$1 AND id=$2 FOR UPDATE",
                                            workspace, conversation_id)
                if found is None:
                    return False
                if items:
                    await conn.executemany(
                        "INSERT INTO conversation_items (workspace, conversation_id, id, item) VALUES ($1,$2,$3,$4)",
                        [(workspace, conversation_id, item["id"], _text(item)) for item in items])
                return True

        return await self.db.run(write)

    async def list_items(self, workspace: str, conversation_id: str) -> list[Item]:
        rows = await self.db.fetch(
            "SELECT item FROM conversation_items WHERE workspace=$1 AND conversation_id=$2 ORDER BY seq",
            workspace, conversation_id)
        return [_decode_dict(r["item"]) for r in rows]

    async def get_item(self, workspace: str, conversation_id: str, item_id: str) -> Item | None:
        row = await self.db.fetchrow(
            "SELECT item FROM conversation_items WHERE workspace=$1 AND conversation_id=$2 AND id=$3",
            workspace, conversation_id, item_id)
        return None if row is None else _decode_dict(row["item"])

    async def delete_item(self, workspace: str, conversation_id: str, item_id: str) -> bool:
        status = await self.db.execute(
            "DELETE FROM conversation_items WHERE workspace=$1 AND conversation_id=$2 AND id=$3",
            workspace, conversation_id, item_id)
        return status != "DELETE 0"

    # -- stored chat completions -----------------------------------------------------------------

    async def put_chat(self, record: StoredChat) -> None:
        await self.db.execute(
            "INSERT INTO chat_completions (workspace, id, created_at, model, metadata, completion, messages) "
            "VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (workspace, id) DO UPDATE SET created_at=excluded.created_at, "
            "model=excluded.model, metadata=excluded.metadata, completion=excluded.completion, messages=excluded.messages",
            record.workspace, record.id, record.created_at, record.model, _text(record.metadata),
            _text(record.completion), _text(record.messages))

    async def get_chat(self, workspace: str, completion_id: str) -> StoredChat | None:
        row = await self.db.fetchrow(
            "SELECT created_at, model, metadata, completion, messages FROM chat_completions WHERE workspace=$1 AND id=$2",
            workspace, completion_id)
        if row is None:
            return None
        return StoredChat(workspace=workspace, id=completion_id, created_at=row["created_at"], model=row["model"],
                          metadata=_decode_dict(row["metadata"]), completion=_decode_dict(row["completion"]),
                          messages=_decode_list(row["messages"]))
