"""Built-in search engine driver ``searxng``: the JSON API of a SearXNG instance.

One request per search: ``GET {base_url}/search`` with ``q``, ``format=json``, ``pageno=1``,
``categories`` and, when they apply, ``engines``, ``language``, ``time_range`` and ``safesearch``.
The instance must enable the JSON format (``search: formats: [html, json]`` in its settings.yml)
or it answers 403, and its bot limiter must let the gateway through (``server: limiter: false``
on a private instance, or the gateway's address in ``botdetection: ip_lists: pass_ip``) or it
answers 429.

:class:`~chorus.search.SearchQuery` mapping:

* ``recency`` → ``time_range`` (``hour`` → ``day``, SearXNG has nothing shorter);
* ``include_domains`` → ``site:`` operators appended to ``q`` (``(site:a OR site:b)`` for
  several), which the upstream engines honour; results off those domains are dropped too;
* ``exclude_domains`` → dropped client-side (the domain and its subdomains);
* ``language`` → ``language`` (``en``), or ``en-US`` together with ``country``; a country
  alone is not sent (SearXNG has no region-only filter);
* ``count`` → the first ``count`` kept results of page 1 (SearXNG has no page size).

Results: ``title``, ``url``, ``content`` → snippet, ``publishedDate`` → date (``YYYY-MM-DD``).

Errors (:class:`~chorus.search.SearchError` kinds): timeout → ``timeout``; connection failure
or 5xx → ``unavailable``; 429 → ``quota``; 401/403 → ``auth``; non-JSON or malformed body,
redirects and other statuses → ``bad_response``. A page with no results while upstream
engines report failures (``unresponsive_engines``) is ``unavailable``. Messages name the engine
and status only, never the API key or the response body.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar, Literal

import msgspec

from chorus import __version__
from chorus.search import (
    HttpSearchEngine,
    SearchEngineSettings,
    SearchError,
    SearchQuery,
    SearchResult,
    collapse_space,
    iso_date,
    select_results,
    status_kind,
    transport_errors,
    with_sites,
)

TIME_RANGE: dict[str, str] = {"hour": "day", "day": "day", "week": "week", "month": "month", "year": "year"}
_HINTS = {
    403: " (is the json format enabled in settings.yml search.formats?)",
    429: " (the instance's bot limiter? disable it or add the gateway to botdetection pass_ip)",
}


class SearxngSettings(SearchEngineSettings, kw_only=True):
    """``driver = "searxng"`` keys. ``api_key``, when set, is sent as ``Authorization: Bearer``
    (for instances behind an authenticating reverse proxy; SearXNG itself has no keys)."""

    #: The instance root, e.g. ``http://127.0.0.1:8888`` (``/search`` is appended).
    base_url: str
    #: SearXNG categories; ``None`` means ``["general"]`` unless ``engines`` is set.
    categories: list[str] | None = None
    #: Restrict to these SearXNG engines (e.g. ``["google", "bing"]``); empty uses the instance's.
    engines: list[str] = []
    #: 0 off, 1 moderate, 2 strict; ``None`` keeps the instance default.
    safesearch: Literal[0, 1, 2] | None = None


class _Result(msgspec.Struct):
    url: str | None = None
    title: str | None = None
    content: str | None = None
    published_date: str | None = msgspec.field(default=None, name="publishedDate")
    pubdate: str | None = None


class _Response(msgspec.Struct):
    results: list[_Result] = []
    unresponsive_engines: list[list[str]] = []


_decode = msgspec.json.Decoder(_Response).decode


class SearxngEngine(HttpSearchEngine):
    """Web search through a SearXNG instance's JSON API (one pooled client per engine)."""

    settings_type: ClassVar[type[SearchEngineSettings]] = SearxngSettings
    settings: SearxngSettings

    def headers(self) -> dict[str, str]:
        """JSON, our user agent, and a bearer token for instances behind an authenticating proxy."""
        headers = {"accept": "application/json", "user-agent": f"chorus-gateway/{__version__}"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key.get()}"
        return headers

    def params(self, query: SearchQuery) -> dict[str, str]:
        """The query string of ``GET /search`` for ``query``."""
        s = self.settings
        params = {"q": with_sites(query.query.strip(), query.include_domains), "format": "json", "pageno": "1"}
        categories = s.categories if s.categories is not None else ([] if s.engines else ["general"])
        if categories:
            params["categories"] = ",".join(categories)
        if s.engines:
            params["engines"] = ",".join(s.engines)
        if query.language:
            params["language"] = locale(query.language, query.country)
        if query.recency in TIME_RANGE:
            params["time_range"] = TIME_RANGE[query.recency]
        if s.safesearch is not None:
            params["safesearch"] = str(s.safesearch)
        return params

    async def search(self, query: SearchQuery) -> list[SearchResult]:
        """At most ``query.count`` results of page 1, best first; failures raise :class:`SearchError`."""
        if query.count < 1 or not query.query.strip():
            return []
        client = self._client
        if client is None:
            raise SearchError("unavailable", f"search engine {self.id!r} is not started")
        with transport_errors(self.id):
            async with asyncio.timeout(self.settings.timeout):
                response = await client.get("/search", params=self.params(query))
        if response.status_code != 200:
            raise self._status_error(response.status_code)
        try:
            page = _decode(response.content)
        except msgspec.DecodeError:
            raise SearchError(
                "bad_response", f"search engine {self.id!r} sent a body that is not SearXNG JSON"
            ) from None
        results = to_results(page.results, query)
        if not results and not page.results and page.unresponsive_engines:
            failed = ", ".join(": ".join(part[:60] for part in pair[:2]) for pair in page.unresponsive_engines[:5])
            raise SearchError(
                "unavailable", f"search engine {self.id!r}: no results, upstream engines failed ({failed})"
            )
        return results

    def _status_error(self, status: int) -> SearchError:
        kind = status_kind(status)
        hint = _HINTS.get(status, "")
        return SearchError(kind, f"search engine {self.id!r} answered HTTP {status}{hint}")


# -- mapping helpers (pure) -------------------------------------------------------------------------


def locale(language: str, country: str | None) -> str:
    """SearXNG's ``language``: ``en``, or ``en-US`` with a country (a full locale is kept as given)."""
    language = language.strip()
    if country and "-" not in language:
        return f"{language.lower()}-{country.strip().upper()}"
    return language


def to_result(item: _Result) -> SearchResult:
    """One SearXNG result as a :class:`SearchResult` (whitespace collapsed, an empty title → the URL)."""
    url = (item.url or "").strip()
    return SearchResult(
        title=collapse_space(item.title) or url,
        url=url,
        snippet=collapse_space(item.content),
        date=iso_date(item.published_date or item.pubdate),
    )


def to_results(items: list[_Result], query: SearchQuery) -> list[SearchResult]:
    """Map SearXNG results: http(s) URLs only, deduplicated, domain filters applied, first ``count``."""
    return select_results(map(to_result, items), query)
