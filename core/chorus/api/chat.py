"""``POST /v1/chat/completions`` (also served without ``/v1``)."""

from __future__ import annotations

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
        if not ctx.stream:
            return Response(content=await pipeline.complete(ctx), media_type=JSON)
        events = pipeline.stream(ctx)
        first = await anext(events)  # errors before the first event become a normal HTTP error

        async def relay() -> object:
            yield first
            async for event in events:
                yield event

        return Stream(relay(), media_type="text/event-stream", headers=SSE_HEADERS)
