"""Legacy ``functions``/``function_call`` support, translated to and from ``tools``.

Upstreams receive only the modern shape. A request that uses ``functions`` is answered in the
legacy shape: ``message.function_call`` (or ``delta.function_call``) and ``finish_reason:
"function_call"``. Historic assistant ``function_call`` messages and ``function`` role results in
the conversation are rewritten as ``tool_calls``/``tool`` messages with synthesized, matching ids.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from chorus.contract.schemas import ChatCompletionRequest, Message

LEGACY_ID_PREFIX = "call_legacy_"


def uses_legacy_messages(messages: list[Message]) -> bool:
    """Whether any message needs rewriting (cheap check for the hot path)."""
    return any(m.role == "function" or (m.role == "assistant" and m.function_call) for m in messages)


def translate_messages(messages: list[Message]) -> list[Message]:
    """Rewrite legacy function messages as tool messages with paired synthesized ids."""
    out: list[Message] = []
    pending: dict[str, list[str]] = {}  # function name -> unanswered synthesized ids
    counter = 0
    for message in messages:
        if message.role == "assistant" and isinstance(message.function_call, dict):
            call_id = f"{LEGACY_ID_PREFIX}{counter}"
            counter += 1
            name = str(message.function_call.get("name", ""))
            pending.setdefault(name, []).append(call_id)
            call = {
                "id": call_id,
                "type": "function",
                "function": {"name": name, "arguments": str(message.function_call.get("arguments", ""))},
            }
            out.append(msgspec.structs.replace(message, function_call=UNSET, tool_calls=[call]))
        elif message.role == "function":
            name = message.name if isinstance(message.name, str) else ""
            ids = pending.get(name)
            call_id = ids.pop(0) if ids else f"{LEGACY_ID_PREFIX}{counter}"
            content = message.content if message.content is not UNSET else ""
            out.append(Message(role="tool", content=content, tool_call_id=call_id))
        else:
            out.append(message)
    return out


def translate_request(request: ChatCompletionRequest) -> ChatCompletionRequest:
    """Replace ``functions``/``function_call`` by ``tools``/``tool_choice`` (one call at a time)."""
    changes: dict[str, Any] = {"functions": UNSET, "function_call": UNSET}
    if isinstance(request.functions, list) and request.tools in (UNSET, None):
        changes["tools"] = [{"type": "function", "function": f} for f in request.functions]
        changes["parallel_tool_calls"] = False
        fc = request.function_call
        if isinstance(fc, str):
            changes["tool_choice"] = fc  # "none" | "auto"
        elif isinstance(fc, dict) and "name" in fc:
            changes["tool_choice"] = {"type": "function", "function": {"name": fc["name"]}}
    return msgspec.structs.replace(request, **changes)


def to_legacy_message(message: dict[str, Any]) -> None:
    """Rewrite a response message's first tool call as ``function_call``, in place."""
    calls = message.pop("tool_calls", None)
    if calls:
        function = calls[0].get("function", {})
        message["function_call"] = {"name": function.get("name", ""), "arguments": function.get("arguments", "")}


def to_legacy_delta(delta: dict[str, Any]) -> None:
    """Rewrite a stream delta's tool call fragment (index 0) as a ``function_call`` fragment."""
    calls = delta.pop("tool_calls", None)
    if calls:
        for fragment in calls:
            if fragment.get("index", 0) != 0:
                continue
            function = fragment.get("function") or {}
            piece: dict[str, Any] = {"arguments": function.get("arguments") or ""}
            if function.get("name"):
                piece["name"] = function["name"]
            delta["function_call"] = piece


def legacy_finish(reason: Any) -> Any:
    """``tool_calls`` -> ``function_call``; other reasons unchanged."""
    return "function_call" if reason == "tool_calls" else reason
