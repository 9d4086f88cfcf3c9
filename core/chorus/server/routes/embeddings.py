"""``POST /v1/embeddings`` through the providers, with ``model/name=`` selectors."""

from __future__ import annotations

import base64
import struct
from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from msgspec import UNSET, UnsetType

from chorus.contract.errors import InvalidRequest, UpstreamInvalidResponse
from chorus.contract.schemas import Wire, decode_body
from chorus.contract.targets import MODEL_PREFIX, unknown_target
from chorus.runtime.registry import Registry
from chorus.server.auth import authenticate
from chorus.server.body import json_body

_encode = msgspec.json.Encoder().encode


class EmbeddingsRequest(Wire):
    model: str
    input: str | list[Any]
    encoding_format: str | UnsetType = UNSET
    dimensions: int | UnsetType = UNSET
    user: str | UnsetType = UNSET


_decoder = msgspec.json.Decoder(EmbeddingsRequest)


class _Embedding(msgspec.Struct):
    """One vector of an upstream answer, checked (numbers only); ``index`` is its position when absent."""

    embedding: list[float]
    index: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    total_tokens: int = 0


class _Answer(msgspec.Struct):
    """What Chorus reads of an upstream ``/embeddings`` answer; the rest is rebuilt spec-exactly."""

    data: list[_Embedding]
    usage: _Usage | None = None


def _checked(result: dict[str, Any], provider: str) -> _Answer:
    try:
        return msgspec.convert(result, _Answer)
    except msgspec.ValidationError as exc:
        raise UpstreamInvalidResponse(f"provider {provider!r} sent embeddings of the wrong shape: {exc}") from None


class EmbeddingsController(Controller):
    path = "/"

    @post(["/v1/embeddings", "/embeddings"], status_code=200)
    async def create(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        """Embed text with a provider's model; the response echoes the selector as ``model``."""
        registry: Registry = request.app.state.registry
        await authenticate(registry, request.headers.get("authorization"))
        body = decode_body(await json_body(request), _decoder)
        if not body.model.startswith(MODEL_PREFIX):
            raise unknown_target(body.model)
        name = body.model[len(MODEL_PREFIX):]
        if "," in name:
            raise InvalidRequest(
                "Fallback chains ('model/name=a/x,b/y') are for chat completions; name one embedding model.",
                param="model", code="invalid_value",
            )
        found = registry.find_model(name)
        if found is None:
            raise unknown_target(body.model)
        inputs = [body.input] if isinstance(body.input, str) else body.input
        if not inputs or not all(isinstance(i, str) for i in inputs):
            raise InvalidRequest("'input' must be a non-empty string or list of strings.", param="input")
        if any(not i for i in inputs):
            raise InvalidRequest("'input' must not contain empty strings.", param="input")
        provider, model = found
        dimensions = body.dimensions if isinstance(body.dimensions, int) else None
        answer = _checked(await provider.embed(list(inputs), model, dimensions=dimensions), provider.id)
        base64_wanted = body.encoding_format == "base64"
        data: list[dict[str, Any]] = []
        for position, item in enumerate(answer.data):
            vector: Any = item.embedding
            if base64_wanted:
                vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
            data.append({"object": "embedding", "index": position if item.index is None else item.index, "embedding": vector})
        usage = answer.usage or _Usage()
        result = {"object": "list", "data": data, "model": body.model,
                  "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens}}
        return Response(content=_encode(result), media_type="application/json")
