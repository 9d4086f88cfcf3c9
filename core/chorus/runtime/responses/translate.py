"""Responses ⇄ chat: the request becomes a chat completion request, its answer becomes output items.

* :func:`normalize_items` turns the client's ``input`` (a string or items) into stored item shapes
  (each with an id and a status), checking every item: a bad one is a 400 naming ``input[i]``.
* :func:`items_to_messages` turns items (a chain's or conversation's history plus this turn's input)
  into chat messages: a ``function_call`` joins the assistant message before it (as a chat
  assistant turn carries its text and its calls together), a ``function_call_output`` becomes a
  ``tool`` message. Call ids are kept, so a parked agent turn (:mod:`chorus.runtime.resume`) is found
  and restored exactly as for a chat client.
* :func:`chat_request` maps the parameters: ``instructions`` becomes a leading ``system`` message
  (so it layers onto a bot's backstory exactly like one, docs/layering.md), ``max_output_tokens``
  → ``max_completion_tokens``, ``text.format`` → ``response_format``, ``reasoning.effort`` →
  ``reasoning_effort``, function tools → chat tools; hosted tools are returned separately.
* :func:`output_items` and :func:`response_object` build the Response from the chat answer.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from msgspec import UNSET

from chorus.contract.context import Source
from chorus.contract.errors import InvalidRequest
from chorus.contract.schemas import ChatCompletionRequest, Message
from chorus.runtime.responses.wire import ResponsesRequest

Item = dict[str, Any]

HOSTED_TOOLS = frozenset({"file_search", "web_search", "web_search_preview", "web_search_2025_08_26",
                          "web_search_preview_2025_03_11"})
INPUT_ROLES = frozenset({"user", "system", "developer"})
FILE_SEARCH = "file_search"


def new_id(prefix: str) -> str:
    """An OpenAI-style id: ``resp_...``, ``msg_...``, ``fc_...``, ``conv_...``."""
    return prefix + secrets.token_hex(24)


# -- input items -----------------------------------------------------------------------------------


def _text_part(part: Any, where: str, assistant: bool) -> Item:
    if not isinstance(part, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text"):
        text = part.get("text")
        if not isinstance(text, str):
            raise InvalidRequest(f"'{where}.text' must be a string.", param=f"{where}.text")
        if assistant:
            annotations = part.get("annotations")
            return {"type": "output_text", "text": text,
                    "annotations": annotations if isinstance(annotations, list) else [], "logprobs": []}
        return {"type": "input_text", "text": text}
    if kind == "refusal" and assistant:
        refusal = part.get("refusal")
        if not isinstance(refusal, str):
            raise InvalidRequest(f"'{where}.refusal' must be a string.", param=f"{where}.refusal")
        return {"type": "refusal", "refusal": refusal}
    if kind == "input_image" and not assistant:
        url = part.get("image_url")
        if not isinstance(url, str) or not url:
            raise InvalidRequest(f"'{where}.image_url' must be a URL or a data URL (file_id images are not supported).",
                                 param=f"{where}.image_url")
        detail = part.get("detail")
        return {"type": "input_image", "image_url": url, "detail": detail if isinstance(detail, str) else "auto"}
    raise InvalidRequest(f"Content part type {kind!r} is not supported in '{where}'.", param=f"{where}.type")


def _message_item(item: Item, where: str) -> Item:
    role = item.get("role")
    if role not in ("user", "assistant", "system", "developer"):
        raise InvalidRequest(f"'{where}.role' must be one of user, assistant, system, developer.", param=f"{where}.role")
    content = item.get("content")
    assistant = role == "assistant"
    if isinstance(content, str):
        parts = [_text_part({"type": "input_text", "text": content}, f"{where}.content", assistant)]
    elif isinstance(content, list):
        parts = [_text_part(p, f"{where}.content[{i}]", assistant) for i, p in enumerate(content)]
    else:
        raise InvalidRequest(f"'{where}.content' must be a string or a list of content parts.", param=f"{where}.content")
    item_id = item.get("id")
    return {"id": item_id if isinstance(item_id, str) and item_id else new_id("msg_"), "type": "message",
            "role": role, "status": "completed", "content": parts}


def _string(item: Item, key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (key != "arguments" and not value):
        raise InvalidRequest(f"'{where}.{key}' must be a non-empty string.", param=f"{where}.{key}")
    return value


def _output_text(output: Any, where: str) -> str | list[Item]:
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return [_text_part(p, f"{where}.output[{i}]", False) for i, p in enumerate(output)]
    raise InvalidRequest(f"'{where}.output' must be a string or a list of content parts.", param=f"{where}.output")


def normalize_item(item: Any, where: str) -> Item | None:
    """One input item in its stored shape (``None`` for items the model does not see, e.g. reasoning)."""
    if not isinstance(item, dict):
        raise InvalidRequest(f"'{where}' must be an object.", param=where)
    kind = item.get("type", "message")
    if kind == "message":
        return _message_item(item, where)
    item_id = item.get("id")
    if kind == "function_call":
        return {"id": item_id if isinstance(item_id, str) and item_id else new_id("fc_"), "type": "function_call",
                "status": "completed", "call_id": _string(item, "call_id", where), "name": _string(item, "name", where),
                "arguments": _string(item, "arguments", where)}
    if kind == "function_call_output":
        return {"id": item_id if isinstance(item_id, str) and item_id else new_id("fco_"),
                "type": "function_call_output", "status": "completed", "call_id": _string(item, "call_id", where),
                "output": _output_text(item.get("output"), where)}
    if kind == "reasoning":
        return None
    raise InvalidRequest(f"Input item type {kind!r} is not supported by Chorus.", param=f"{where}.type")


def normalize_items(value: Any, param: str = "input") -> list[Item]:
    """The client's ``input`` (a string or a list of items) as stored items."""
    if isinstance(value, str):
        return [_message_item({"role": "user", "content": value}, param)]
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a string or a list of items.", param=param)
    items = []
    for i, item in enumerate(value):
        normalized = normalize_item(item, f"{param}[{i}]")
        if normalized is not None:
            items.append(normalized)
    return items


# -- items → chat messages -------------------------------------------------------------------------


def _chat_content(parts: list[Item]) -> str | list[dict[str, Any]]:
    """Text parts as one string (what every upstream takes); with images, a chat content-part array."""
    if all(p.get("type") in ("input_text", "output_text") for p in parts):
        return "\n".join(str(p.get("text", "")) for p in parts)
    out: list[dict[str, Any]] = []
    for part in parts:
        if part.get("type") == "input_image":
            out.append({"type": "image_url", "image_url": {"url": part["image_url"], "detail": part.get("detail", "auto")}})
        elif "text" in part:
            out.append({"type": "text", "text": part["text"]})
    return out


def items_to_messages(items: list[Item]) -> list[Message]:
    """Chat messages for the model from stored items, in order."""
    messages: list[Message] = []
    open_assistant: Message | None = None  # the assistant message a following function_call joins
    for item in items:
        kind = item.get("type")
        if kind == "message":
            role = item["role"]
            parts = item.get("content") or []
            if role == "assistant":
                text = "".join(str(p.get("text") or "") for p in parts if p.get("type") == "output_text")
                refusal = "".join(str(p.get("refusal") or "") for p in parts if p.get("type") == "refusal")
                message = Message(role="assistant", content=text or None)
                if refusal:
                    message.refusal = refusal
                messages.append(message)
                open_assistant = message
                continue
            messages.append(Message(role=role, content=_chat_content(parts)))
        elif kind == "function_call":
            call = {"id": item["call_id"], "type": "function",
                    "function": {"name": item["name"], "arguments": item["arguments"]}}
            if open_assistant is None:
                open_assistant = Message(role="assistant", content=None, tool_calls=[])
                messages.append(open_assistant)
            elif not isinstance(open_assistant.tool_calls, list):
                open_assistant.tool_calls = []
            assert isinstance(open_assistant.tool_calls, list)
            open_assistant.tool_calls.append(call)
            continue
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else "\n".join(
                str(p.get("text", "")) for p in output or [] if isinstance(p, dict))
            messages.append(Message(role="tool", tool_call_id=item["call_id"], content=text))
        open_assistant = None
    return messages


# -- tools and parameters --------------------------------------------------------------------------


def split_tools(tools: Any) -> tuple[list[dict[str, Any]], dict[str, Item]]:
    """Function tools in chat shape, and the hosted tools by kind (``file_search``, ``web_search``)."""
    functions: list[dict[str, Any]] = []
    hosted: dict[str, Item] = {}
    for i, tool in enumerate(tools if isinstance(tools, list) else ()):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise InvalidRequest(f"'{where}' must be an object.", param=where)
        kind = tool.get("type")
        if kind == "function":
            name = tool.get("name")
            if not isinstance(name, str) or not name:
                raise InvalidRequest(f"'{where}.name' must be a non-empty string.", param=f"{where}.name")
            function: dict[str, Any] = {"name": name}
            for key in ("description", "parameters", "strict"):
                if tool.get(key) is not None:
                    function[key] = tool[key]
            functions.append({"type": "function", "function": function})
        elif kind == FILE_SEARCH:
            ids = tool.get("vector_store_ids")
            if not isinstance(ids, list) or not ids or not all(isinstance(v, str) for v in ids):
                raise InvalidRequest(f"'{where}.vector_store_ids' must list at least one vector store id.",
                                     param=f"{where}.vector_store_ids")
            hosted[FILE_SEARCH] = tool
        elif kind in HOSTED_TOOLS:
            hosted["web_search"] = tool
        else:
            raise InvalidRequest(
                f"Tool type {kind!r} is not supported by Chorus: use function tools, file_search or web_search.",
                param=f"{where}.type", code="unsupported_tool")
    return functions, hosted


def echo_tools(tools: Any) -> list[Item]:
    """The request's tools as the Response echoes them (function tools always carry ``strict``)."""
    echoed: list[Item] = []
    for tool in tools if isinstance(tools, list) else ():
        if tool.get("type") == "function":
            echoed.append({"type": "function", "name": tool["name"], "description": tool.get("description"),
                           "parameters": tool.get("parameters") or {}, "strict": bool(tool.get("strict", False))})
        else:
            echoed.append(dict(tool))
    return echoed


def _tool_choice(choice: Any) -> Any:
    if choice is UNSET or choice is None:
        return UNSET
    if isinstance(choice, str):
        if choice not in ("auto", "none", "required"):
            raise InvalidRequest("'tool_choice' must be auto, none, required or a tool.", param="tool_choice")
        return choice
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise InvalidRequest("'tool_choice.name' must name a function tool.", param="tool_choice.name")
        return {"type": "function", "function": {"name": name}}
    if kind in HOSTED_TOOLS:
        return "auto"  # hosted tools run before the model (file_search) or as a server tool it may call
    if kind == "allowed_tools":
        mode = choice.get("mode")
        return mode if mode in ("auto", "required") else "auto"
    raise InvalidRequest(f"'tool_choice' type {kind!r} is not supported.", param="tool_choice.type")


def _response_format(text: Any) -> Any:
    if not isinstance(text, dict):
        return UNSET
    fmt = text.get("format")
    if not isinstance(fmt, dict):
        return UNSET
    kind = fmt.get("type")
    if kind == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        if "name" not in schema:
            raise InvalidRequest("'text.format.name' is required for json_schema.", param="text.format.name")
        return {"type": "json_schema", "json_schema": schema}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "text":
        return UNSET
    raise InvalidRequest(f"'text.format.type' {kind!r} is not supported.", param="text.format.type")


def instructions_text(instructions: Any) -> str | None:
    if isinstance(instructions, str):
        return instructions or None
    if isinstance(instructions, list):
        parts = [normalize_item(item, f"instructions[{i}]") for i, item in enumerate(instructions)]
        texts = [str(p.get("text", "")) for item in parts if item for p in item.get("content") or []]
        return "\n".join(t for t in texts if t) or None
    return None


def chat_request(request: ResponsesRequest, request_type: type[ChatCompletionRequest], model: str,
                 messages: list[Message], functions: list[dict[str, Any]], stream: bool) -> ChatCompletionRequest:
    """The chat completion request the pipeline runs for a Responses request."""
    instructions = instructions_text(request.instructions)
    if instructions:
        messages = [Message(role="system", content=instructions), *messages]
    if not messages:
        raise InvalidRequest("'input' must contain at least one item.", param="input")
    fields: dict[str, Any] = {"model": model, "messages": messages}
    if functions:
        fields["tools"] = functions
        fields["tool_choice"] = _tool_choice(request.tool_choice)
        if isinstance(request.parallel_tool_calls, bool):
            fields["parallel_tool_calls"] = request.parallel_tool_calls
    if isinstance(request.max_output_tokens, int):
        if request.max_output_tokens < 1:
            raise InvalidRequest("'max_output_tokens' must be at least 1.", param="max_output_tokens")
        fields["max_completion_tokens"] = request.max_output_tokens
    for name in ("temperature", "top_p"):
        value = getattr(request, name)
        if isinstance(value, float | int) and not isinstance(value, bool):
            fields[name] = value
    fields["response_format"] = _response_format(request.text)
    if isinstance(request.reasoning, dict) and isinstance(request.reasoning.get("effort"), str):
        fields["reasoning_effort"] = request.reasoning["effort"]
    if isinstance(request.user, str):
        fields["user"] = request.user
    if stream:
        fields["stream"] = True
        fields["stream_options"] = {"include_usage": True}
    if request.chorus_progress is True:
        fields["chorus_progress"] = True
    return request_type(**fields)


# -- the answer → output items ---------------------------------------------------------------------


def annotation(chat_annotation: Any, sources: list[Source]) -> Item | None:
    """A chat ``url_citation`` annotation as a Responses annotation (``file_citation`` for file_search)."""
    if not isinstance(chat_annotation, dict) or chat_annotation.get("type") != "url_citation":
        return None
    body = chat_annotation.get("url_citation")
    if not isinstance(body, dict):
        return None
    url = str(body.get("url", ""))
    start, end = int(body.get("start_index", 0)), int(body.get("end_index", 0))
    for source in sources:
        if source.url == url and source.metadata.get("kind") == FILE_SEARCH:
            return {"type": "file_citation", "file_id": str(source.metadata.get("file_id", "")),
                    "filename": str(source.metadata.get("filename", "")), "index": start}
    return {"type": "url_citation", "url": url, "title": str(body.get("title") or url),
            "start_index": start, "end_index": end}


def text_part(text: str, annotations: list[Item]) -> Item:
    return {"type": "output_text", "text": text, "annotations": annotations, "logprobs": []}


def message_item(item_id: str, parts: list[Item], status: str = "completed") -> Item:
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": parts}


def call_item(item_id: str, call: dict[str, Any], status: str = "completed") -> Item:
    function = call.get("function") or {}
    return {"id": item_id, "type": "function_call", "status": status, "call_id": str(call.get("id") or ""),
            "name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or "")}


def output_items(message: dict[str, Any], sources: list[Source]) -> list[Item]:
    """The output items of a chat ``message``: a text message (with annotations), then client calls."""
    items: list[Item] = []
    parts: list[Item] = []
    content = message.get("content")
    if isinstance(content, str) and content:
        found = [a for a in (annotation(x, sources) for x in message.get("annotations") or []) if a is not None]
        parts.append(text_part(content, found))
    refusal = message.get("refusal")
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    if parts:
        items.append(message_item(new_id("msg_"), parts))
    for call in message.get("tool_calls") or []:
        if isinstance(call, dict):
            items.append(call_item(new_id("fc_"), call))
    return items


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def usage_object(usage: dict[str, Any] | None) -> Item:
    usage = usage or {}
    prompt = _count(usage.get("prompt_tokens"))
    completion = _count(usage.get("completion_tokens"))
    total = usage["total_tokens"] if isinstance(usage.get("total_tokens"), int) else prompt + completion
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    out_details = usage.get("completion_tokens_details")
    reasoning = out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None
    return {"input_tokens": prompt,
            "input_tokens_details": {"cached_tokens": cached if isinstance(cached, int) else 0, "cache_write_tokens": 0},
            "output_tokens": completion,
            "output_tokens_details": {"reasoning_tokens": reasoning if isinstance(reasoning, int) else 0},
            "total_tokens": total}


def response_object(request: ResponsesRequest, *, response_id: str, created_at: int, model: str, status: str,
                    output: list[Item], usage: dict[str, Any] | None = None, include_usage: bool = False,
                    error: Item | None = None, incomplete: str | None = None,
                    conversation: str | None = None, store: bool = True) -> Item:
    """A spec-exact Response object (``usage`` only once the response is done)."""
    reasoning = request.reasoning if isinstance(request.reasoning, dict) else None
    text = request.text if isinstance(request.text, dict) and isinstance(request.text.get("format"), dict) else None
    body: Item = {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error, "incomplete_details": {"reason": incomplete} if incomplete else None,
        "instructions": request.instructions if isinstance(request.instructions, str | list) else None,
        "max_output_tokens": request.max_output_tokens if isinstance(request.max_output_tokens, int) else None,
        "model": model, "output": output,
        "parallel_tool_calls": request.parallel_tool_calls if isinstance(request.parallel_tool_calls, bool) else True,
        "previous_response_id": request.previous_response_id if isinstance(request.previous_response_id, str) else None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": None} if reasoning else None,
        "store": store,
        "temperature": request.temperature if isinstance(request.temperature, float | int) else None,
        "text": {"format": dict(text["format"])} if text else {"format": {"type": "text"}},
        "tool_choice": request.tool_choice if isinstance(request.tool_choice, str | dict) else "auto",
        "tools": echo_tools(request.tools),
        "top_p": request.top_p if isinstance(request.top_p, float | int) else None,
        "truncation": "disabled",
        "metadata": dict(request.metadata) if isinstance(request.metadata, dict) else {},
        "conversation": {"id": conversation} if conversation else None,
    }
    if isinstance(request.user, str):
        body["user"] = request.user
    if include_usage:
        body["usage"] = usage_object(usage)
    return body


# -- chat messages → items (a chat completion appended to a conversation) --------------------------


def _input_parts(content: Any) -> list[Item]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    parts: list[Item] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"type": "input_text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            parts.append({"type": "input_image", "image_url": str(url), "detail": detail if isinstance(detail, str) else "auto"})
    return parts


def messages_to_items(messages: list[Message]) -> list[Item]:
    """Chat messages as conversation items (user, system and developer text; assistant turns; tool results)."""
    items: list[Item] = []
    for message in messages:
        content = message.content if message.content is not UNSET else None
        if message.role in INPUT_ROLES:
            items.append({"id": new_id("msg_"), "type": "message", "role": message.role, "status": "completed",
                          "content": _input_parts(content)})
        elif message.role == "assistant":
            calls = message.tool_calls if isinstance(message.tool_calls, list) else []
            items.extend(output_items({"content": content if isinstance(content, str) else None, "tool_calls": calls}, []))
        elif message.role == "tool":
            text = content if isinstance(content, str) else "\n".join(
                str(p.get("text", "")) for p in content or [] if isinstance(p, dict))
            items.append({"id": new_id("fco_"), "type": "function_call_output", "status": "completed",
                          "call_id": str(message.tool_call_id or ""), "output": text})
    return items
