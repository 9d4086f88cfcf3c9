"""OpenAI wire schemas for what Chorus decodes: lenient (unknown fields are ignored).

Requests are decoded once into :class:`ChatCompletionRequest`; fields the client did not send stay
``UNSET`` and are omitted when the struct is encoded for the upstream, so unknown or unmapped
parameters never reach a provider. Responses from providers are plain ``dict`` objects in the
OpenAI shape, so vendor extensions pass through untouched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

import msgspec
from msgspec import UNSET as UNSET  # re-exported: chorus.schemas offers it to plugins
from msgspec import UnsetType

from chorus.contract.errors import InvalidRequest

if TYPE_CHECKING:
    from chorus.contract.fields import RequestField


T = TypeVar("T")


class Wire(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base for wire structs: unknown fields ignored, unset fields omitted on encode."""


Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Message(Wire):
    """One chat message. ``content`` is a string, a content-part array (passed through), or null."""

    role: Role
    content: str | list[dict[str, Any]] | None | UnsetType = UNSET
    name: str | UnsetType = UNSET
    tool_calls: list[dict[str, Any]] | UnsetType = UNSET
    tool_call_id: str | UnsetType = UNSET
    function_call: dict[str, Any] | None | UnsetType = UNSET
    refusal: str | None | UnsetType = UNSET
    audio: dict[str, Any] | None | UnsetType = UNSET


class ChatCompletionRequest(Wire):
    """``POST /v1/chat/completions`` body. Only the fields below are forwarded upstream."""

    model: str
    messages: list[Message]
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    max_tokens: int | None | UnsetType = UNSET
    max_completion_tokens: int | None | UnsetType = UNSET
    stop: str | list[str] | None | UnsetType = UNSET
    n: int | None | UnsetType = UNSET
    seed: int | None | UnsetType = UNSET
    presence_penalty: float | None | UnsetType = UNSET
    frequency_penalty: float | None | UnsetType = UNSET
    logit_bias: dict[str, float] | None | UnsetType = UNSET
    logprobs: bool | None | UnsetType = UNSET
    top_logprobs: int | None | UnsetType = UNSET
    response_format: dict[str, Any] | None | UnsetType = UNSET
    user: str | UnsetType = UNSET
    reasoning_effort: str | None | UnsetType = UNSET
    tools: list[dict[str, Any]] | None | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    functions: list[dict[str, Any]] | None | UnsetType = UNSET
    function_call: str | dict[str, Any] | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    stream_options: dict[str, Any] | None | UnsetType = UNSET
    # Read by Chorus, never forwarded: ``store: true`` keeps the completion for
    # ``GET /v1/chat/completions/{id}``; ``metadata`` is stored with it.
    store: bool | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    # Chorus's own extension (never forwarded upstream). Fields plugins read are declared by them
    # (the ``request_fields`` hook) and added by :func:`extend_request`.
    chorus_progress: bool | UnsetType = UNSET


OPENAI_FIELDS = frozenset(ChatCompletionRequest.__struct_fields__)


def extend_request(fields: Sequence[RequestField]) -> type[ChatCompletionRequest]:
    """A subclass of :class:`ChatCompletionRequest` that also decodes ``fields`` (each optional)."""
    if not fields:
        return ChatCompletionRequest
    extended = msgspec.defstruct(
        "ChatCompletionRequest",
        [(f.name, f.type | UnsetType, UNSET) for f in fields],
        bases=(ChatCompletionRequest,),
        kw_only=True,
        omit_defaults=True,
        module=__name__,
    )
    return cast("type[ChatCompletionRequest]", extended)  # defstruct is typed as returning type[Struct]


_request_decoder = msgspec.json.Decoder(ChatCompletionRequest)
_PATH = re.compile(r"at `\$\.?([^`]*)`")


def validation_param(message: str) -> str | None:
    """The ``param`` (e.g. ``messages[0].role``) named in a msgspec validation message."""
    match = _PATH.search(message)
    return match.group(1) or None if match else None


def decode_body(body: bytes, decoder: msgspec.json.Decoder[T]) -> T:
    """Decode a request body with ``decoder``; every decode problem becomes a 400 naming the field."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        text = str(exc)
        raise InvalidRequest(f"Invalid request: {text.replace('`$.', '`')}", param=validation_param(text)) from None
    except msgspec.DecodeError:
        raise InvalidRequest("The request body is not valid JSON.", code="invalid_json") from None
    except RecursionError:  # msgspec's nesting limit (~1,000 levels): no legitimate body comes near it
        raise InvalidRequest("The request body is nested too deeply.", code="invalid_json") from None


def decode_chat_request(
    body: bytes, decoder: msgspec.json.Decoder[ChatCompletionRequest] = _request_decoder
) -> ChatCompletionRequest:
    """Decode a chat completion body (with ``decoder``, e.g. of an :func:`extend_request` type); every problem is a 400."""
    if not body:
        raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
    request = decode_body(body, decoder)
    _check(request)
    return request


def _check(request: ChatCompletionRequest) -> None:
    """Semantic checks msgspec cannot express."""
    if not request.messages:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    if isinstance(request.n, int) and not 1 <= request.n <= 128:
        raise InvalidRequest("'n' must be between 1 and 128.", param="n")
    for i, message in enumerate(request.messages):
        if message.role == "tool" and not message.tool_call_id:
            raise InvalidRequest(
                f"messages[{i}] has role 'tool' but no 'tool_call_id'.", param=f"messages[{i}].tool_call_id"
            )
        if message.role == "function" and not message.name:
            raise InvalidRequest(f"messages[{i}] has role 'function' but no 'name'.", param=f"messages[{i}].name")
        if message.content is UNSET and message.role in ("system", "developer", "user"):
            raise InvalidRequest(f"messages[{i}] has no 'content'.", param=f"messages[{i}].content")
    if request.tools or request.functions or isinstance(request.function_call, dict):
        _check_tools(request)


def _named(value: Any, where: str) -> None:
    """``value`` must be an object with a non-empty string ``name`` (a function definition or choice)."""
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be an object with a 'name'.", param=where)
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidRequest(f"'{where}.name' must be a non-empty string.", param=f"{where}.name")


def _check_tools(request: ChatCompletionRequest) -> None:
    """Tool definitions Chorus reads (to merge server tools, translate legacy functions) are well formed."""
    for i, tool in enumerate(request.tools if isinstance(request.tools, list) else ()):
        if "function" in tool or tool.get("type", "function") == "function":
            _named(tool.get("function"), f"tools[{i}].function")
    for i, function in enumerate(request.functions if isinstance(request.functions, list) else ()):
        _named(function, f"functions[{i}]")
    if isinstance(request.function_call, dict):
        _named(request.function_call, "function_call")


def text_of(content: Any) -> str:
    """Plain text of a message ``content`` (a string or the text parts of a content-part array)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def user_texts(messages: Sequence[Message]) -> list[str]:
    """The non-empty text of every user message, in conversation order."""
    texts = (text_of(m.content).strip() for m in messages if m.role == "user")
    return [t for t in texts if t]
