"""Stream plumbing of the runtime: SSE framing, the chunk shaper and the tool-call accumulator.

The shaper gives every chunk sent to the client the request's one ``id``, ``created`` and
``model`` (the client's selector), the role on the first chunk only, ``usage: null`` when the
client asked for usage, each choice its ``index`` and ``finish_reason`` (required by the spec, left
out by some upstreams), legacy ``function_call`` deltas when the client used ``functions``, and runs
``post_process`` on it. It runs once per relayed chunk, so it stays a closure with no allocation
beyond the chunk's own. Upstream chunks reach it checked (:func:`chorus.runtime.answers.check_chunk`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from chorus.contract.context import RequestContext
from chorus.runtime import legacy

_encode = msgspec.json.Encoder().encode
DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keep-alive\n\n"

Emit = Callable[[dict[str, Any]], Awaitable[bytes]]
Gather = Callable[[list[Any]], Awaitable[list[Any]]]


def sse(payload: dict[str, Any]) -> bytes:
    """One SSE ``data:`` event."""
    return b"data: " + _encode(payload) + b"\n\n"


def chunk_emitter(ctx: RequestContext, post: Callable[..., Any] | None, gather: Gather) -> Emit:
    """The function that shapes, post-processes and frames each chunk of ``ctx``'s stream."""
    target = ctx.target
    assert target is not None
    selector, cid, created = target.selector, ctx.completion_id, ctx.created
    include_usage, legacy_mode = ctx.include_usage, ctx.legacy_functions
    sent_role = False

    async def emit(chunk: dict[str, Any]) -> bytes:
        nonlocal sent_role
        chunk["id"] = cid
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = created
        chunk["model"] = selector
        if include_usage:
            chunk["usage"] = None
        elif "usage" in chunk:
            del chunk["usage"]
        for index, choice in enumerate(chunk["choices"]):
            delta = choice.get("delta")
            if delta is None:
                delta = choice["delta"] = {}
            choice.setdefault("index", index)
            choice.setdefault("finish_reason", None)
            if sent_role:
                delta.pop("role", None)
            if legacy_mode:
                legacy.to_legacy_delta(delta)
                if choice.get("finish_reason"):
                    choice["finish_reason"] = legacy.legacy_finish(choice["finish_reason"])
        if not sent_role and chunk["choices"]:
            first = chunk["choices"][0]["delta"]
            if first.get("role") is None:
                first["role"] = "assistant"
            sent_role = True
        if post is not None:
            results = post(ctx=ctx, payload=chunk, chunk=True)
            if results:  # only implementations that returned something (e.g. a coroutine) are awaited
                await gather(results)
        return sse(chunk)

    return emit


def progress_event(ctx: RequestContext, event: dict[str, Any]) -> bytes:
    """An opt-in progress chunk (``"choices": []`` and a ``chorus`` object)."""
    target = ctx.target
    assert target is not None
    return sse({"id": ctx.completion_id, "object": "chat.completion.chunk", "created": ctx.created,
                "model": target.selector, "choices": [], "chorus": event})


def usage_chunk(ctx: RequestContext) -> dict[str, Any]:
    """The final ``include_usage`` chunk: no choices, the request's summed usage."""
    target = ctx.target
    assert target is not None
    return {"id": ctx.completion_id, "object": "chat.completion.chunk", "created": ctx.created,
            "model": target.selector, "choices": [],
            "usage": ctx.usage or {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}}


def accumulate(fragments: dict[int, dict[str, Any]], pieces: Any) -> None:
    """Merge streamed ``delta.tool_calls`` fragments into whole calls keyed by index."""
    for piece in pieces:
        index = piece.get("index", 0)
        call = fragments.setdefault(index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        if piece.get("id"):
            call["id"] = piece["id"]
        function = piece.get("function") or {}
        if function.get("name"):
            call["function"]["name"] += function["name"]
        if function.get("arguments"):
            call["function"]["arguments"] += function["arguments"]
