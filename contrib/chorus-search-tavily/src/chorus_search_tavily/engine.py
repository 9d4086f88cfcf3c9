"""The ``tavily`` driver: settings, the pooled client, and error mapping.

Errors (:class:`~chorus.search.SearchError` kinds): timeout → ``timeout``; connection failure
or 5xx → ``unavailable``; 429 (rate limit), 432 (plan limit) and 433 (pay-as-you-go limit) →
``quota``; 401/403 → ``auth``; other statuses (400), redirects and bodies that are not the
documented JSON → ``bad_response``. Messages carry the status and its documented meaning,
never upstream free text, so never the API key.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

import msgspec

from chorus.search import (
    HttpSearchEngine,
    SearchEngineSettings,
    SearchError,
    SearchQuery,
    SearchResult,
    status_kind,
    transport_errors,
)
from chorus.secrets import Secret
from chorus_search_tavily.mapping import QUOTA_STATUSES, STATUS_MEANING, Response, body, to_results

DEFAULT_BASE_URL = "https://api.tavily.com"

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(Response).decode


class TavilySettings(SearchEngineSettings, kw_only=True):
    """``driver = "tavily"`` keys."""

    #: API root; ``/search`` is appended (override for a proxy or a test server).
    base_url: str = DEFAULT_BASE_URL
    #: The API key (``tvly-...``), sent as ``Authorization: Bearer`` (required).
    api_key: Secret
    #: ``general``, ``news`` (results carry ``published_date``) or ``finance``.
    topic: Literal["general", "news", "finance"] = "general"
    #: ``basic`` (1 credit) or ``advanced`` (2 credits, more relevant excerpts).
    search_depth: Literal["basic", "advanced"] = "basic"


class TavilyEngine(HttpSearchEngine):
    """Web search through the Tavily search API (one pooled client per engine)."""

    settings_type: ClassVar[type[SearchEngineSettings]] = TavilySettings
    settings: TavilySettings

    def headers(self) -> dict[str, str]:
        """JSON both ways and the bearer token."""
        return {
            "accept": "application/json",
            "content-type": "application/json",
            "authorization": f"Bearer {self.settings.api_key.get()}",
        }

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """At most ``query.count`` results, best first; failures raise :class:`SearchError`."""
        if query.count < 1 or not query.query.strip():
            return []
        client = self._client
        if client is None:
            raise SearchError("unavailable", f"search engine {self.id!r} is not started")
        s = self.settings
        payload = _encode(body(query, topic=s.topic, search_depth=s.search_depth))
        with transport_errors(self.id):
            async with asyncio.timeout(s.timeout):
                response = await client.post("/search", content=payload)
        if response.status_code != 200:
            status = response.status_code
            meaning = STATUS_MEANING.get(status, "server error" if status >= 500 else "")
            text = f"search engine {self.id!r} answered HTTP {status}" + (f" ({meaning})" if meaning else "")
            raise SearchError(status_kind(status, quota=QUOTA_STATUSES), text)
        try:
            return to_results(_decode(response.content), query)
        except msgspec.DecodeError:
            raise SearchError(
                "bad_response", f"search engine {self.id!r} sent a body that is not Tavily JSON"
            ) from None
