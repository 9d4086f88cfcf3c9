"""Upstream answers as Chorus reads them: checked where they arrive, completed spec-exactly.

A provider driver returns plain dicts in the OpenAI shape, but an upstream can get that shape wrong
(``"choices": "nope"``, a tool call without a function), and OpenAI-compatible servers (Ollama,
vLLM, llama.cpp) omit fields the OpenAI spec requires (``message.refusal``, ``choices[].logprobs``,
a tool call's ``id``). :func:`check_completion` and :func:`check_chunk` raise
:class:`~chorus.contract.errors.UpstreamInvalidResponse` (502, or an ``error`` event once a stream
has started) on anything Chorus would trip over, before any of it is read. They fill what the spec
requires with ``setdefault`` while they visit each choice anyway (the chunk shaper,
:func:`chorus.runtime.streaming.chunk_emitter`, fills a chunk's ``index`` and ``finish_reason``);
nothing validates a whole response per request: a few type checks per choice is the cost.
"""

from __future__ import annotations

import secrets
from typing import Any

import msgspec

from chorus.contract.errors import UpstreamInvalidResponse

_encode = msgspec.json.Encoder().encode
_TEXT = (str, type(None))
_USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def invalid(provider: str, what: str) -> UpstreamInvalidResponse:
    """The 502 for an answer of the wrong shape; the message says what was wrong (never the data)."""
    return UpstreamInvalidResponse(f"provider {provider!r} sent an answer of the wrong shape: {what}")


def check_completion(response: dict[str, Any], provider: str) -> dict[str, Any]:
    """Check a ``chat.completion`` dict Chorus is about to read; fill what the spec requires. Returns it."""
    choices = response.get("choices")
    if not isinstance(choices, list):
        raise invalid(provider, "'choices' is not a list")
    _check_usage(response, provider)
    for key in ("usage", "system_fingerprint"):  # optional in the spec, but not nullable
        if response.get(key, "") is None:
            del response[key]
    for index, choice in enumerate(choices):
        if not isinstance(choice, dict):
            raise invalid(provider, f"choices[{index}] is not an object")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise invalid(provider, f"choices[{index}].message is not an object")
        if not isinstance(message.get("content"), (*_TEXT, list)):
            raise invalid(provider, f"choices[{index}].message.content is not a string")
        calls = message.get("tool_calls")
        if calls is not None:
            _check_calls(calls, f"choices[{index}].message.tool_calls", provider, whole=True)
        elif "tool_calls" in message:
            del message["tool_calls"]
        if message.get("function_call", "") is None:
            del message["function_call"]
        message.setdefault("role", "assistant")
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        choice.setdefault("index", index)
        choice.setdefault("logprobs", None)
        if choice.get("finish_reason") is None:
            choice["finish_reason"] = "tool_calls" if calls else "stop"
    return response


def check_chunk(chunk: dict[str, Any], provider: str) -> dict[str, Any]:
    """Check a ``chat.completion.chunk`` dict Chorus is about to read (tool call fragments get their
    ``index`` when they lack one). Returns it. Runs once per chunk: the common chunk (one choice, a
    text delta) costs a handful of dict lookups and type checks."""
    choices = chunk.get("choices")
    if type(choices) is not list:
        if choices is not None:
            raise invalid(provider, "'choices' of a chunk is not a list")
        chunk["choices"] = choices = []
    if chunk.get("usage") is not None:
        _check_usage(chunk, provider)
    for index, choice in enumerate(choices):
        if type(choice) is not dict:
            raise invalid(provider, f"choices[{index}] of a chunk is not an object")
        delta = choice.get("delta")
        if delta is None:
            continue
        if type(delta) is not dict:
            raise invalid(provider, f"choices[{index}].delta is not an object")
        content = delta.get("content")
        if content is not None and type(content) is not str:
            raise invalid(provider, f"choices[{index}].delta.content is not a string")
        if "tool_calls" in delta:
            calls = delta["tool_calls"]
            if calls is None:
                del delta["tool_calls"]
            else:
                _check_calls(calls, f"choices[{index}].delta.tool_calls", provider, whole=False)
        if "function_call" in delta and delta["function_call"] is None:
            del delta["function_call"]
    return chunk


def _check_usage(answer: dict[str, Any], provider: str) -> None:
    usage = answer.get("usage")
    if isinstance(usage, dict):
        for key in _USAGE_KEYS:
            value = usage.get(key)
            if value is None:  # the total of what is known, or 0
                known = _int(usage.get("prompt_tokens")) + _int(usage.get("completion_tokens"))
                usage[key] = known if key == "total_tokens" else 0
            elif not isinstance(value, int) or isinstance(value, bool):
                raise invalid(provider, f"usage.{key} is not an integer")
        for key in [k for k, v in usage.items() if v is None]:  # e.g. "prompt_tokens_details": null
            del usage[key]
    elif usage is not None:
        raise invalid(provider, "'usage' is not an object")


def _int(value: Any) -> int:
    return value if isinstance(value, int) else 0


def _check_calls(calls: Any, where: str, provider: str, *, whole: bool) -> None:
    """Tool calls of a message (``whole``) or fragments of a delta; ids and types are filled in."""
    if not isinstance(calls, list):
        raise invalid(provider, f"{where} is not a list")
    for number, call in enumerate(calls):
        if not isinstance(call, dict):
            raise invalid(provider, f"{where}[{number}] is not an object")
        if call.get("type") == "custom":  # a custom tool call: {"custom": {"name", "input"}}
            if not isinstance(call.get("custom"), dict):
                raise invalid(provider, f"{where}[{number}].custom is not an object")
            continue
        call_id = call.get("id")
        if not isinstance(call_id, _TEXT):
            raise invalid(provider, f"{where}[{number}].id is not a string")
        function = call.get("function")
        if whole:
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise invalid(provider, f"{where}[{number}].function has no name")
            if not call_id:
                call["id"] = "call_" + secrets.token_hex(12)
            call.setdefault("type", "function")
        else:
            index = call.get("index")
            if index is None:
                call["index"] = number
            elif not isinstance(index, int) or isinstance(index, bool):
                raise invalid(provider, f"{where}[{number}].index is not an integer")
            if function is None:
                continue
            if not isinstance(function, dict) or not isinstance(function.get("name"), _TEXT):
                raise invalid(provider, f"{where}[{number}].function is not an object with a name")
        arguments = function.get("arguments")
        if isinstance(arguments, dict):  # some servers send the arguments as an object: the spec says a string
            function["arguments"] = _encode(arguments).decode()
        elif arguments is None and whole:
            function["arguments"] = ""
        elif not isinstance(arguments, _TEXT):
            raise invalid(provider, f"{where}[{number}].function.arguments is not a string")
