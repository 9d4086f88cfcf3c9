"""The Responses API: ``POST /v1/responses`` and the stored responses (also served without ``/v1``).

``POST`` is an ASGI handler like chat completions (:mod:`chorus.server.routes.chat`), so it has
the same edge behaviour: body caps, 415 for non-JSON bodies, a client that leaves cancels the
upstream work at every stage (while the answer is prepared, before the first event, mid-stream,
during hidden tool steps), and errors before the first event are proper HTTP statuses. The run
itself is :class:`chorus.runtime.responses.service.Responses` on the chat pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get
from litestar.exceptions import MethodNotAllowedException
from litestar.handlers import asgi

from chorus.contract.context import RequestContext
from chorus.contract.errors import NotFound
from chorus.contract.observe import Observation
from chorus.runtime.responses.service import Responses
from chorus.runtime.responses.wire import ResponsesRequest, decode
from chorus.server.auth import RATE_LIMIT_HEADERS, authenticate, identify
from chorus.server.body import ClientGone, check_json_type, read_body
from chorus.server.requestid import request_id
from chorus.server.routes.chat import _SSE_HEADERS, DisconnectWatch, Receive, Send, observed_call, relay
from chorus.server.routes.files import json_response, paginate
from chorus.storage.responses import StoredResponse

log = logging.getLogger("chorus")

_encode = msgspec.json.Encoder().encode
_JSON_HEADER = (b"content-type", b"application/json")
_TRUTHY = ("1", "true", "yes")
_WANTED = frozenset({b"authorization", b"content-length", b"content-type", b"x-chorus-progress", b"traceparent",
                     b"tracestate"})


@asgi(["/v1/responses", "/responses"], copy_scope=False, name="responses_create")
async def create_response(scope: Any, receive: Receive, send: Send) -> None:
    """Authenticate, decode, prepare; answer the Response or stream its events."""
    method = scope["method"]
    if method == "OPTIONS":
        await send({"type": "http.response.start", "status": 204, "headers": [(b"allow", b"OPTIONS, POST")]})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    if method != "POST":
        raise MethodNotAllowedException()
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        name = name.lower()
        if name in _WANTED and name not in found:
            found[name] = value.decode("latin-1")
    await observed_call(scope, "responses", found,
                        lambda observation, made: _create(scope, receive, send, found, observation, made))


async def _create(scope: Any, receive: Receive, send: Send, found: dict[bytes, str], observation: Observation,
                  made: list[RequestContext]) -> None:
    state = scope["app"].state
    responses: Responses = state.responses
    caller = await identify(responses.pipeline.registry, found.get(b"authorization"))
    observation.workspace, observation.key_id = caller.workspace.id, caller.key_id
    if caller.subjects:  # a limited key: counted now, its x-ratelimit-* headers on whatever answer it gets
        access = responses.pipeline.access
        assert access is not None
        scope[RATE_LIMIT_HEADERS] = await access.admit(caller)
    check_json_type(found.get(b"content-type"))
    body = await read_body(receive, found.get(b"content-length"), state.max_body_bytes)
    request: ResponsesRequest = decode(body, ResponsesRequest)
    progress = found.get(b"x-chorus-progress")
    if progress is not None and progress.lower() in _TRUTHY and request.chorus_progress is msgspec.UNSET:
        request = msgspec.structs.replace(request, chorus_progress=True)
    with DisconnectWatch(receive) as watch:
        try:
            observation.selector = request.model if isinstance(request.model, str) else ""
            turn = await responses.prepare(request, caller.workspace, request_id(scope), caller.key_id, observation)
            made.append(turn.ctx)
            observation.stream = bool(request.stream)
            if not request.stream:
                content = _encode(await responses.complete(turn))
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.absorb()
            raise ClientGone("while its response was prepared; upstream work cancelled") from None
    if not request.stream:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [_JSON_HEADER, (b"content-length", str(len(content)).encode())]})
        await send({"type": "http.response.body", "body": content, "more_body": False})
        return
    events = responses.stream(turn)
    with DisconnectWatch(receive) as watch:
        try:
            first = await anext(events)
            await send({"type": "http.response.start", "status": 200, "headers": list(_SSE_HEADERS)})
            await send({"type": "http.response.body", "body": first, "more_body": True})
            await relay(events, send)
            watch.stop()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.gone:
                raise
            watch.absorb()
            log.info("request %s: client disconnected from its response stream; upstream work cancelled",
                     turn.ctx.request_id)
        finally:
            await events.aclose()


async def _service(request: Request[Any, Any, Any]) -> tuple[str, Responses]:
    responses: Responses = request.app.state.responses
    workspace = await authenticate(responses.pipeline.registry, request.headers.get("authorization"))
    return workspace.id, responses


async def _stored(request: Request[Any, Any, Any]) -> StoredResponse:
    """The caller's stored response named by the path, or a 404 (another tenant's is a 404 too)."""
    workspace, responses = await _service(request)
    response_id = request.path_params["response_id"]
    stored = await responses.store.get_response(workspace, response_id)
    if stored is None:
        raise response_not_found(response_id)
    return stored


def response_not_found(response_id: str) -> NotFound:
    return NotFound(f"No response found with id {response_id!r}.", param="response_id", code="response_not_found")


class ResponsesController(Controller):
    """Stored responses: retrieve, delete, input items (workspace scoped: another tenant's is a 404)."""

    path = "/"

    @get(["/v1/responses/{response_id:str}", "/responses/{response_id:str}"])
    async def retrieve(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return json_response((await _stored(request)).response)

    @delete(["/v1/responses/{response_id:str}", "/responses/{response_id:str}"], status_code=200)
    async def remove(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        workspace, responses = await _service(request)
        response_id = request.path_params["response_id"]
        if not await responses.store.delete_response(workspace, response_id):
            raise response_not_found(response_id)
        return json_response({"id": response_id, "object": "response.deleted", "deleted": True})

    @get(["/v1/responses/{response_id:str}/input_items", "/responses/{response_id:str}/input_items"])
    async def input_items(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        return json_response(paginate(list((await _stored(request)).input_items), request))
