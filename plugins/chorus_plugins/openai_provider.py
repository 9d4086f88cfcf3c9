"""Built-in provider driver ``openai``: any OpenAI-compatible upstream.

Works with OpenAI, Azure-compatible gateways, Ollama, vLLM, llama.cpp server, LM Studio and the
like. One keep-alive connection pool (:class:`chorus.http1.HTTPPool`) per configured provider,
created at startup.

Why not httpx or aiohttp here: measured in ``benchmarks/client_compare.py`` (see
``docs/benchmarks.md``), httpx's connection pool collapses under concurrency (about 100 req/s at 128
concurrent requests on one core) and aiohttp costs 60-125 µs of CPU per request, the largest share
of the gateway's own cost; ``chorus.http1`` does the same exchange for a fraction of that. httpx
remains what tools and tests use.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec

from chorus.context import RequestContext
from chorus.errors import (
    ConfigError,
    UpstreamConnectionLost,
    UpstreamError,
    UpstreamInvalidResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from chorus.http1 import (
    ConnectionLost,
    HTTPError,
    HTTPPool,
    RemoteProtocolError,
    RequestTimeout,
    Response,
    ResponseTooLarge,
)
from chorus.providers import ProviderDriver, ProviderSettings
from chorus.schemas import ChatCompletionRequest
from chorus.sse import EventTooLarge, iter_sse_data

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
RELAYED_STATUSES = frozenset({400, 404, 408, 409, 413, 415, 422, 429})


class OpenAISettings(ProviderSettings):
    """``driver = "openai"`` settings; ``base_url`` is the API root (ending in ``/v1``).

    ``api_key_header`` and ``query`` are for upstreams that authenticate or version differently
    from OpenAI, such as Azure OpenAI (``api_key_header = "api-key"``, ``query = { "api-version" =
    "2024-10-21" }``); docs/providers.md shows them in use.
    """

    base_url: str | None = "https://api.openai.com/v1"
    organization: str | None = None
    #: Send ``api_key`` as this header's whole value instead of ``Authorization: Bearer <key>``.
    api_key_header: str | None = None
    #: Query parameters added to every request (``base_url`` itself may not carry a query).
    query: dict[str, str] = {}


class OpenAIProvider(ProviderDriver):
    """Chat completions over HTTP against an OpenAI-compatible ``base_url``."""

    settings_type = OpenAISettings
    settings: OpenAISettings

    def __init__(self, settings: ProviderSettings) -> None:
        super().__init__(settings)
        self._pool: HTTPPool | None = None
        s = self.settings
        if s.base_url and urlsplit(s.base_url).query:
            raise ConfigError("base_url must not carry a query string: put its parameters in `query`")
        suffix = "?" + urlencode(s.query) if s.query else ""
        self._chat_path = "/chat/completions" + suffix
        self._embeddings_path = "/embeddings" + suffix

    async def start(self) -> None:
        """Open the connection pool (connections are made on first use)."""
        s = self.settings
        headers = {"content-type": "application/json", "accept": "application/json", **s.headers}
        if s.api_key and s.api_key_header:
            headers[s.api_key_header.lower()] = s.api_key.get()
        elif s.api_key:
            headers["authorization"] = f"Bearer {s.api_key.get()}"
        if s.organization:
            headers["openai-organization"] = s.organization
        try:
            proxy = s.proxy_for(s.base_url or "", os.environ)  # the environment is read here, once
        except ValueError as exc:  # a malformed HTTPS_PROXY / HTTP_PROXY (the message hides credentials)
            raise UpstreamUnavailable(f"provider {self.id!r} cannot use the proxy: {exc}") from None
        self._pool = HTTPPool(
            s.base_url or "",
            headers=headers,
            max_connections=s.max_connections,
            timeout=s.timeout,
            connect_timeout=s.connect_timeout,
            proxy=proxy,
        )

    async def aclose(self) -> None:
        """Close the connection pool."""
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None

    @property
    def pool(self) -> HTTPPool:
        if self._pool is None:
            raise UpstreamUnavailable(f"provider {self.id!r} is not started")
        return self._pool

    async def _post(self, path: str, payload: bytes) -> Response:
        try:
            return await self.pool.request("POST", path, payload)
        except HTTPError as exc:
            raise self._failed(exc) from None

    async def _read_json(self, path: str, payload: bytes, what: str) -> dict[str, Any]:
        response = await self._post(path, payload)
        try:
            content = await response.read(self.settings.max_response_bytes)
        except HTTPError as exc:
            raise self._failed(exc) from None
        if response.status >= 400:
            raise self._error(response.status, content, response.headers)
        try:
            result = _decode(content)
        except (msgspec.DecodeError, RecursionError):
            raise UpstreamInvalidResponse(f"provider {self.id!r} returned a response that is not JSON") from None
        if not isinstance(result, dict):
            raise UpstreamInvalidResponse(f"provider {self.id!r} returned an unexpected {what}")
        return result

    async def complete(self, body: ChatCompletionRequest, ctx: RequestContext) -> dict[str, Any]:
        """POST ``/chat/completions`` and return the decoded ``chat.completion``."""
        return await self._read_json(self._chat_path, _encode(body), "response")

    async def embed(self, inputs: list[str], model: str, *, dimensions: int | None = None) -> dict[str, Any]:
        """POST ``/embeddings`` (float encoding) and return the decoded response."""
        payload: dict[str, Any] = {"model": model, "input": inputs, "encoding_format": "float"}
        if dimensions is not None:
            payload["dimensions"] = dimensions
        result = await self._read_json(self._embeddings_path, _encode(payload), "embeddings response")
        if not isinstance(result.get("data"), list):
            raise UpstreamInvalidResponse(f"provider {self.id!r} returned an unexpected embeddings response")
        return result

    async def stream(self, body: ChatCompletionRequest, ctx: RequestContext) -> AsyncIterator[dict[str, Any]]:
        """POST with ``stream: true`` and yield each decoded chunk until ``[DONE]``.

        Leaving early (client gone, error) closes the upstream connection instead of returning it
        to the pool, so the upstream sees the cancellation.
        """
        response = await self._post(self._chat_path, _encode(body))
        finished = False
        try:
            if response.status >= 400:
                raise self._error(response.status, await response.read(self.settings.max_response_bytes), response.headers)
            async for data in iter_sse_data(response.aiter_bytes(), self.settings.max_event_bytes):
                if data == b"[DONE]":
                    finished = True
                    return
                try:
                    chunk = _decode(data)
                except (msgspec.DecodeError, RecursionError):
                    raise UpstreamInvalidResponse(f"provider {self.id!r} sent a stream event that is not JSON") from None
                if isinstance(chunk, dict):
                    if "error" in chunk and "choices" not in chunk:
                        raise self._error(502, data, response.headers)
                    yield chunk
            raise UpstreamInvalidResponse(f"provider {self.id!r} ended the stream without [DONE]")
        except EventTooLarge:
            raise UpstreamInvalidResponse(
                f"provider {self.id!r} sent a stream event larger than max_event_bytes ({self.settings.max_event_bytes})",
                code="upstream_response_too_large") from None
        except HTTPError as exc:
            raise self._failed(exc) from None
        finally:
            if finished:
                response.release()
            else:
                response.close()

    # -- error mapping --------------------------------------------------------------------------

    def _failed(self, exc: HTTPError) -> UpstreamError:
        """A transport failure as the client sees it: unreachable, too slow, broken off, or unreadable."""
        if isinstance(exc, RequestTimeout):
            return self._timeout()
        if isinstance(exc, ResponseTooLarge):
            return UpstreamInvalidResponse(
                f"provider {self.id!r} answered more than max_response_bytes ({self.settings.max_response_bytes})",
                code="upstream_response_too_large")
        if isinstance(exc, ConnectionLost):
            return UpstreamConnectionLost(f"provider {self.id!r} closed the connection before its answer was complete")
        if isinstance(exc, RemoteProtocolError):
            return UpstreamInvalidResponse(f"provider {self.id!r} broke HTTP ({exc})")
        return self._unreachable(exc)

    def _timeout(self) -> UpstreamTimeout:
        return UpstreamTimeout(f"provider {self.id!r} did not answer in time")

    def _unreachable(self, exc: Exception) -> UpstreamUnavailable:
        return UpstreamUnavailable(f"provider {self.id!r} is unreachable ({type(exc).__name__})")

    def _error(self, status: int, content: bytes, headers: Mapping[str, str]) -> UpstreamError:
        """Relay a client-side upstream error with its status; anything else becomes a 502."""
        message, code, param, kind = "", None, None, None
        try:
            payload = _decode(content)
            error = payload.get("error") if isinstance(payload, dict) else None
            if isinstance(error, dict):
                message = str(error.get("message") or "")
                code = error.get("code") if isinstance(error.get("code"), str) else None
                param = error.get("param") if isinstance(error.get("param"), str) else None
                kind = error.get("type") if isinstance(error.get("type"), str) else None
            elif isinstance(error, str):
                message = error
        except (msgspec.DecodeError, AttributeError, RecursionError):
            pass
        message = self._scrub(message)[:2000] or f"status {status}"
        if status in RELAYED_STATUSES:
            extra = {"retry-after": headers["retry-after"]} if status == 429 and "retry-after" in headers else {}
            return UpstreamError(
                f"Upstream provider {self.id!r}: {message}",
                status_code=status,
                error_type=kind or ("rate_limit_error" if status == 429 else "invalid_request_error"),
                code=code,
                param=param,
                headers=extra,
                upstream_status=status,
                retry_after=headers.get("retry-after"),
            )
        if status in (401, 403):
            message = "the provider rejected the gateway's credentials"
        return UpstreamError(f"Upstream provider {self.id!r} failed (status {status}): {message}",
                             upstream_status=status, retry_after=headers.get("retry-after"))

    def _scrub(self, text: str) -> str:
        key = self.settings.api_key.get() if self.settings.api_key else ""
        return text.replace(key, "***") if key else text
