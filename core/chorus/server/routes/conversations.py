"""The Conversations API (``/v1/conversations``, also without ``/v1``), scoped to the caller's workspace.

A conversation holds ordered items in the Responses item shapes. ``conversation`` on
``POST /v1/responses`` appends each turn; a conversation created with ``metadata.model`` set to a
selector can be addressed as ``model: "conversation/id=<id>"`` on chat completions and responses
(docs/selectors.md). Another workspace's conversation is a 404, exactly like a missing one.
"""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, delete, get, post

from chorus.contract.errors import InvalidRequest, NotFound
from chorus.runtime.responses.service import Responses, conversation_not_found
from chorus.runtime.responses.translate import new_id, normalize_items
from chorus.runtime.responses.wire import AddItems, CreateConversation, UpdateConversation, check_metadata, decode
from chorus.server.auth import authenticate
from chorus.server.body import json_body
from chorus.server.routes.files import json_response, paginate
from chorus.storage.responses import StoredConversation

MAX_ITEMS = 20  # items per create or add call, as OpenAI


async def _service(request: Request[Any, Any, Any]) -> tuple[str, Responses]:
    responses: Responses = request.app.state.responses
    workspace = await authenticate(responses.pipeline.registry, request.headers.get("authorization"))
    return workspace.id, responses


def conversation_object(record: StoredConversation) -> dict[str, Any]:
    return {"id": record.id, "object": "conversation", "created_at": record.created_at, "metadata": record.metadata}


def _items(raw: Any) -> list[dict[str, Any]]:
    if raw is None or not isinstance(raw, list):
        return []
    if len(raw) > MAX_ITEMS:
        raise InvalidRequest(f"At most {MAX_ITEMS} items can be added at once.", param="items")
    return normalize_items(raw, "items")


async def _conversation(responses: Responses, workspace: str, conversation_id: str) -> StoredConversation:
    record = await responses.store.get_conversation(workspace, conversation_id)
    if record is None:
        raise conversation_not_found(conversation_id, "conversation_id")
    return record


class ConversationsController(Controller):
    path = "/"

    @post(["/v1/conversations", "/conversations"], status_code=200)
    async def create(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        body: CreateConversation = decode(await json_body(request), CreateConversation, empty_ok=True)
        record = StoredConversation(workspace=workspace, id=new_id("conv_"), created_at=int(time.time()),
                                    metadata=check_metadata(body.metadata))
        await responses.store.create_conversation(record, _items(body.items))
        return json_response(conversation_object(record))

    @get(["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"])
    async def retrieve(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        return json_response(conversation_object(
            await _conversation(responses, workspace, request.path_params["conversation_id"])))

    @post(["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"], status_code=200)
    async def update(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id = request.path_params["conversation_id"]
        await _conversation(responses, workspace, conversation_id)
        body: UpdateConversation = decode(await json_body(request), UpdateConversation)
        if not await responses.store.update_conversation(workspace, conversation_id, check_metadata(body.metadata)):
            raise conversation_not_found(conversation_id, "conversation_id")
        return json_response(conversation_object(await _conversation(responses, workspace, conversation_id)))

    @delete(["/v1/conversations/{conversation_id:str}", "/conversations/{conversation_id:str}"], status_code=200)
    async def remove(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id = request.path_params["conversation_id"]
        if not await responses.store.delete_conversation(workspace, conversation_id):
            raise conversation_not_found(conversation_id, "conversation_id")
        return json_response({"id": conversation_id, "object": "conversation.deleted", "deleted": True})

    @get(["/v1/conversations/{conversation_id:str}/items", "/conversations/{conversation_id:str}/items"])
    async def list_items(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id = request.path_params["conversation_id"]
        await _conversation(responses, workspace, conversation_id)
        return json_response(paginate(await responses.store.list_items(workspace, conversation_id), request))

    @post(["/v1/conversations/{conversation_id:str}/items", "/conversations/{conversation_id:str}/items"],
          status_code=200)
    async def add_items(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id = request.path_params["conversation_id"]
        await _conversation(responses, workspace, conversation_id)
        body: AddItems = decode(await json_body(request), AddItems)
        items = _items(body.items)
        if not await responses.store.add_items(workspace, conversation_id, items):
            raise conversation_not_found(conversation_id, "conversation_id")
        return json_response({"object": "list", "data": items, "first_id": items[0]["id"] if items else "",
                              "last_id": items[-1]["id"] if items else "", "has_more": False})

    @get(["/v1/conversations/{conversation_id:str}/items/{item_id:str}",
          "/conversations/{conversation_id:str}/items/{item_id:str}"])
    async def get_item(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id, item_id = request.path_params["conversation_id"], request.path_params["item_id"]
        await _conversation(responses, workspace, conversation_id)
        item = await responses.store.get_item(workspace, conversation_id, item_id)
        if item is None:
            raise _item_not_found(item_id)
        return json_response(item)

    @delete(["/v1/conversations/{conversation_id:str}/items/{item_id:str}",
             "/conversations/{conversation_id:str}/items/{item_id:str}"], status_code=200)
    async def delete_item(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        conversation_id, item_id = request.path_params["conversation_id"], request.path_params["item_id"]
        record = await _conversation(responses, workspace, conversation_id)
        if not await responses.store.delete_item(workspace, conversation_id, item_id):
            raise _item_not_found(item_id)
        return json_response(conversation_object(record))


def _item_not_found(item_id: str) -> NotFound:
    return NotFound(f"No such item: {item_id!r}.", param="item_id", code="item_not_found")
