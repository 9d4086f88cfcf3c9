"""Wire structs of the Responses and Conversations APIs (lenient: unknown fields are ignored).

Only what Chorus reads is typed; items and tools stay dicts, checked where they are translated
(:mod:`chorus.runtime.responses.translate`), so a bad one is a 400 naming its place.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType

from chorus.contract.errors import InvalidRequest
from chorus.contract.schemas import Wire, decode_body


class ResponsesRequest(Wire):
    """``POST /v1/responses``."""

    model: str | UnsetType = UNSET
    input: str | list[dict[str, Any]] | UnsetType = UNSET
    instructions: str | list[dict[str, Any]] | None | UnsetType = UNSET
    tools: list[dict[str, Any]] | None | UnsetType = UNSET
    tool_choice: str | dict[str, Any] | None | UnsetType = UNSET
    parallel_tool_calls: bool | None | UnsetType = UNSET
    max_output_tokens: int | None | UnsetType = UNSET
    temperature: float | None | UnsetType = UNSET
    top_p: float | None | UnsetType = UNSET
    text: dict[str, Any] | None | UnsetType = UNSET
    reasoning: dict[str, Any] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET
    user: str | None | UnsetType = UNSET
    store: bool | None | UnsetType = UNSET
    stream: bool | None | UnsetType = UNSET
    previous_response_id: str | None | UnsetType = UNSET
    conversation: str | dict[str, Any] | None | UnsetType = UNSET
    truncation: str | None | UnsetType = UNSET
    chorus_progress: bool | UnsetType = UNSET


class CreateConversation(Wire):
    """``POST /v1/conversations``."""

    items: list[dict[str, Any]] | None | UnsetType = UNSET
    metadata: dict[str, str] | None | UnsetType = UNSET


class UpdateConversation(Wire):
    """``POST /v1/conversations/{id}``."""

    metadata: dict[str, str] | None


class AddItems(Wire):
    """``POST /v1/conversations/{id}/items``."""

    items: list[dict[str, Any]]


_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {
    t: msgspec.json.Decoder(t) for t in (ResponsesRequest, CreateConversation, UpdateConversation, AddItems)
}


def decode(body: bytes, type_: type[Any], *, empty_ok: bool = False) -> Any:
    """Decode a body of ``type_``; every problem is a 400 naming the field."""
    if not body:
        if not empty_ok:
            raise InvalidRequest("The request body is empty; expected a JSON object.", code="invalid_json")
        body = b"{}"
    return decode_body(body, _decoders[type_])


METADATA_KEYS = 16


def check_metadata(metadata: Any, param: str = "metadata") -> dict[str, str]:
    """OpenAI's metadata limits: at most 16 pairs, keys up to 64 and values up to 512 characters."""
    if metadata is None or metadata is UNSET:
        return {}
    if len(metadata) > METADATA_KEYS:
        raise InvalidRequest(f"'{param}' may hold at most {METADATA_KEYS} pairs.", param=param)
    for key, value in metadata.items():
        if len(key) > 64:
            raise InvalidRequest(f"'{param}' keys are at most 64 characters.", param=param)
        if len(value) > 512:
            raise InvalidRequest(f"'{param}' values are at most 512 characters.", param=f"{param}.{key}")
    return dict(metadata)
