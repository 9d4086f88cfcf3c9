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

import email.utils
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from chorus.search import SearchQuery, SearchResult

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
_SPACE = re.compile(r"\s+")


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


def to_results(response: Response, query: SearchQuery) -> list[SearchResult]:
    """Map ``results``: http(s) URLs only, deduplicated, domain filters enforced, first ``count``."""
    include = normalize_domains(query.include_domains)
    exclude = normalize_domains(query.exclude_domains)
    seen: set[str] = set()
    results: list[SearchResult] = []
    for item in response.results:
        url = (item.url or "").strip()
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        if (include and not on_domains(url, include)) or (exclude and on_domains(url, exclude)):
            continue
        seen.add(url)
        title = _SPACE.sub(" ", item.title or "").strip() or url
        snippet = _SPACE.sub(" ", item.content or "").strip()
        results.append(SearchResult(title=title, url=url, snippet=snippet, date=iso_date(item.published_date)))
        if len(results) >= query.count:
            break
    return results


def normalize_domains(domains: Iterable[str]) -> list[str]:
    """Bare lower-case host names: scheme, path, port, ``*.`` and dots around are removed; empties dropped."""
    out: list[str] = []
    for raw in domains:
        value = raw.strip().lower()
        host = (urlsplit(value if "//" in value else f"//{value}").hostname or "").removeprefix("*.").strip(".")
        if host and host not in out:
            out.append(host)
    return out


def on_domains(url: str, domains: list[str]) -> bool:
    """Whether ``url``'s host is one of ``domains`` or a subdomain of one (``domains`` normalised)."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    return any(host == d or host.endswith("." + d) for d in domains)


def iso_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from an ISO 8601 or RFC 2822 timestamp (the date as written); ``None`` if unparsable."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(text).date().isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def status_kind(status: int) -> str:
    """The :class:`~chorus.search.SearchError` kind for a non-200 status."""
    if status in QUOTA_STATUSES:
        return "quota"
    if status in (401, 403):
        return "auth"
    if status >= 500:
        return "unavailable"
    return "bad_response"
