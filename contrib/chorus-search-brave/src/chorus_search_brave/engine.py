"""The ``brave`` driver: settings, the pooled client, and error mapping.

Errors (:class:`~chorus.search.SearchError` kinds): timeout → ``timeout``; connection failure
or 5xx → ``unavailable``; 429 (``RATE_LIMITED``, ``QUOTA_LIMITED``) → ``quota``; 401/403 and
422 ``SUBSCRIPTION_TOKEN_INVALID`` → ``auth``; other statuses (422 ``VALIDATION``), redirects and
bodies that are not the documented JSON → ``bad_response``. Messages carry the status and
Brave's error code (an identifier such as ``RATE_LIMITED``), never upstream free text, so never
the API key.
"""

from __future__ import annotations

import asyncio
import re
from typing import ClassVar, Literal

import msgspec

from chorus.search import (
    HttpSearchEngine,
    SearchEngineSettings,
    SearchError,
    SearchQuery,
    SearchResult,
    transport_errors,
)
from chorus.secrets import Secret
from chorus_search_brave.mapping import ErrorResponse, Response, params, status_kind, to_results

DEFAULT_BASE_URL = "https://api.search.brave.com/res/v1"

_decode = msgspec.json.Decoder(Response).decode
_decode_error = msgspec.json.Decoder(ErrorResponse).decode
_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class BraveSettings(SearchEngineSettings, kw_only=True):
    """``driver = "brave"`` keys."""

    #: API root; ``/web/search`` is appended (override for a proxy or a test server).
    base_url: str = DEFAULT_BASE_URL
    #: The subscription token, sent as ``X-Subscription-Token`` (required).
    api_key: Secret
    #: ``off``, ``moderate`` or ``strict``; ``None`` keeps Brave's default (moderate).
    safesearch: Literal["off", "moderate", "strict"] | None = None
    #: Ask for up to 5 extra excerpts per result (plans that include them) and append them to the snippet.
    extra_snippets: bool = False


class BraveEngine(HttpSearchEngine):
    """Web search through the Brave Search API (one pooled client per engine)."""

    settings_type: ClassVar[type[SearchEngineSettings]] = BraveSettings
    settings: BraveSettings

    def headers(self) -> dict[str, str]:
        """JSON and the subscription token."""
        return {"accept": "application/json", "x-subscription-token": self.settings.api_key.get()}

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """At most ``query.count`` results, best first; failures raise :class:`SearchError`."""
        if query.count < 1 or not query.query.strip():
            return []
        client = self._client
        if client is None:
            raise SearchError("unavailable", f"search engine {self.id!r} is not started")
        s = self.settings
        with transport_errors(self.id):
            async with asyncio.timeout(s.timeout):
                response = await client.get(
                    "/web/search", params=params(query, safesearch=s.safesearch, extra_snippets=s.extra_snippets)
                )
        if response.status_code != 200:
            raise self._status_error(response.status_code, response.content)
        try:
            return to_results(_decode(response.content), query)
        except msgspec.DecodeError:
            raise SearchError("bad_response", f"search engine {self.id!r} sent a body that is not Brave JSON") from None

    def _status_error(self, status: int, body: bytes) -> SearchError:
        """Map a non-200 answer; the message carries Brave's error code, never upstream free text."""
        code = None
        try:
            error = _decode_error(body).error
            code = error.code if error is not None else None
        except msgspec.DecodeError:
            pass
        code = code if code and _CODE.fullmatch(code) else None
        text = f"search engine {self.id!r} answered HTTP {status}" + (f" {code}" if code else "")
        return SearchError(status_kind(status, code), text)
