"""Stored chat completions: ``GET /v1/chat/completions/{id}`` and ``.../messages`` (``store: true``).

Only completions created with ``store: true`` are kept (:mod:`chorus.runtime.responses.chats`);
another workspace's id is a 404, like a missing one.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from chorus.contract.errors import NotFound
from chorus.runtime.responses.chats import stored_messages
from chorus.runtime.responses.service import Responses
from chorus.server.auth import authenticate
from chorus.server.routes.files import json_response, paginate
from chorus.storage.responses import StoredChat


async def _stored(request: Request[Any, Any, Any]) -> StoredChat:
    responses: Responses = request.app.state.responses
    workspace = await authenticate(responses.pipeline.registry, request.headers.get("authorization"))
    completion_id = request.path_params["completion_id"]
    record = await responses.store.get_chat(workspace.id, completion_id)
    if record is None:
        raise NotFound(f"No stored chat completion with id {completion_id!r} (only store: true completions are kept).",
                       param="completion_id", code="completion_not_found")
    return record


class StoredChatsController(Controller):
    path = "/"

    @get(["/v1/chat/completions/{completion_id:str}", "/chat/completions/{completion_id:str}"])
    async def retrieve(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return json_response((await _stored(request)).completion)

    @get(["/v1/chat/completions/{completion_id:str}/messages", "/chat/completions/{completion_id:str}/messages"])
    async def messages(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        record = await _stored(request)
        params = request.query_params
        if "order" not in params:  # the spec's default order for messages is ascending
            return json_response(paginate(list(reversed(stored_messages(record))), request))
        return json_response(paginate(stored_messages(record), request))
