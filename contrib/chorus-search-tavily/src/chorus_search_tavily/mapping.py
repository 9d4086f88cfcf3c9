"""Pure mapping between :mod:`chorus.search` types and the Tavily search API.

Request (``POST /search``, JSON) from a :class:`~chorus.search.SearchQuery`:

* ``query`` → ``query``; ``count`` → ``max_results`` (at most 20, Tavily's maximum);
* ``recency`` → ``time_range``: ``day`` (hour and day), ``week``, ``month``, ``year``;
* ``include_domains`` / ``exclude_domains`` → the parameters of the same names (normalised to
  bare host names), and enforced again client-side;
* ``country`` → ``country`` as Tavily's country name (``GB`` → ``united kingdom``), only with
  ``topic = "general"`` (Tavily ignores it otherwise) and only for known codes;
* ``language`` → nothing (Tavily has no language filter).

Settings add ``topic`` and ``search_depth``. Response: ``results[]`` ``title``, ``url``,
``content`` → snippet, ``published_date`` (news results) → date as ``YYYY-MM-DD``.
"""

from __future__ import annotations

from typing import Any

import msgspec

from chorus.search import SearchQuery, SearchResult, collapse_space, iso_date, normalize_domains, select_results
from chorus_search_tavily.countries import country_name

MAX_RESULTS = 20
TIME_RANGE: dict[str, str] = {"hour": "day", "day": "day", "week": "week", "month": "month", "year": "year"}
QUOTA_STATUSES = frozenset({429, 432, 433})
STATUS_MEANING: dict[int, str] = {
    400: "bad request",
    401: "missing or invalid API key",
    403: "forbidden",
    429: "rate limit exceeded",
    432: "plan usage limit exceeded",
    433: "pay-as-you-go limit exceeded",
}


class Result(msgspec.Struct):
    title: str | None = None
    url: str | None = None
    content: str | None = None
    published_date: str | None = None


class Response(msgspec.Struct):
    """The part of a search response the driver reads."""

    results: list[Result] = []


def body(query: SearchQuery, *, topic: str = "general", search_depth: str = "basic") -> dict[str, Any]:
    """The JSON request body for ``query``."""
    out: dict[str, Any] = {
        "query": query.query.strip(),
        "max_results": min(query.count, MAX_RESULTS),
        "topic": topic,
        "search_depth": search_depth,
    }
    if query.recency in TIME_RANGE:
        out["time_range"] = TIME_RANGE[query.recency]
    if include := normalize_domains(query.include_domains):
        out["include_domains"] = include
    if exclude := normalize_domains(query.exclude_domains):
        out["exclude_domains"] = exclude
    if query.country and topic == "general" and (name := country_name(query.country)):
        out["country"] = name
    return out


def to_result(item: Result) -> SearchResult:
    """One Tavily result as a :class:`SearchResult` (whitespace collapsed, an empty title → the URL)."""
    url = (item.url or "").strip()
    return SearchResult(
        title=collapse_space(item.title) or url,
        url=url,
        snippet=collapse_space(item.content),
        date=iso_date(item.published_date),
    )


def to_results(response: Response, query: SearchQuery) -> list[SearchResult]:
    """Map ``results``: http(s) URLs only, deduplicated, domain filters enforced, first ``count``."""
    return select_results(map(to_result, response.results), query)
