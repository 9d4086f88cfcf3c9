"""``POST /v1/chat/completions`` (also served without ``/v1``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from litestar import Controller, Request, Response, post
from litestar.response import Stream

from chorus.context import RequestContext
from chorus.pipeline import Pipeline
from chorus.requestid import request_id
from chorus.schemas import decode_chat_request

JSON = "application/json"
SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class ChatController(Controller):
    """Chat completions, streamed or not."""

    path = "/"

    @post(["/v1/chat/completions", "/chat/completions"], status_code=200)
    async def create(self, request: Request) -> Response[bytes] | Stream:
        """Authenticate, decode once, run the pipeline; stream when ``stream`` is true."""
        pipeline: Pipeline = request.app.state.pipeline
        workspace = pipeline.authenticate(request.headers.get("authorization"))
        chat = decode_chat_request(await request.body())
        ctx = RequestContext(
            request_id=request_id(request.scope), workspace=workspace, registry=pipeline.registry, request=chat
        )
        if chat.chorus_progress is True or request.headers.get("x-chorus-progress", "").lower() in ("1", "true", "yes"):
            ctx.state["progress"] = True
        if chat.return_citations is True:
            ctx.state["return_citations"] = True
        if not ctx.stream:
            return Response(content=await until_disconnect(pipeline.complete(ctx), request.receive), media_type=JSON)
        events = pipeline.stream(ctx)
        first = await anext(events)  # errors before the first event become a normal HTTP error

        async def relay() -> object:
            yield first
            async for event in events:
                yield event

        return Stream(relay(), media_type="text/event-stream", headers=SSE_HEADERS)


class ClientGone(Exception):
    """The client disconnected before its non-streaming answer was ready."""


async def until_disconnect(work: Awaitable[bytes], receive: Any) -> bytes:
    """Await ``work``, cancelling it if the client disconnects first (the upstream call with it)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        raise ClientGone
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
