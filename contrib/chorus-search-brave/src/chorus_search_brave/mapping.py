"""Pure mapping between :mod:`chorus.search` types and the Brave Search web search API.

Request (``GET /res/v1/web/search``) from a :class:`~chorus.search.SearchQuery`:

* ``query`` → ``q``; ``include_domains`` → ``site:`` operators appended to ``q``;
* ``count`` → ``count`` (at most 20, Brave's maximum; 20 when ``exclude_domains`` is set so that
  dropping excluded results still leaves enough);
* ``recency`` → ``freshness``: ``pd`` (hour and day), ``pw``, ``pm``, ``py``;
* ``language`` → ``search_lang`` in Brave's codes (:func:`search_lang`); ``country`` → ``country``;
* ``exclude_domains`` (and ``include_domains`` again) → filtered client-side.

Response: ``web.results[]`` ``title``, ``url``, ``description`` (its ``<strong>`` highlighting
removed) → snippet, ``page_age`` (else ``age``) → date as ``YYYY-MM-DD``.
"""

from __future__ import annotations

import html
import re
from typing import Any

import msgspec

from chorus import search
from chorus.search import SearchQuery, SearchResult, collapse_space, select_results, with_sites

MAX_COUNT = 20
FRESHNESS: dict[str, str] = {"hour": "pd", "day": "pd", "week": "pw", "month": "pm", "year": "py"}
#: Absolute dates Brave writes in ``page_age``/``age`` besides ISO 8601 and RFC 2822.
DATE_LAYOUTS = ("%B %d, %Y", "%b %d, %Y")
_TAG = re.compile(r"<[^>]*>")


class WebResult(msgspec.Struct):
    title: str | None = None
    url: str | None = None
    description: str | None = None
    page_age: str | None = None
    age: str | None = None
    extra_snippets: list[str] | None = None


class Web(msgspec.Struct):
    results: list[WebResult] = []


class Response(msgspec.Struct):
    """The parts of a web search response the driver reads (``web`` is absent when nothing matched)."""

    web: Web | None = None


class ErrorDetail(msgspec.Struct):
    code: str | None = None


class ErrorResponse(msgspec.Struct):
    """Brave's ``{"type": "ErrorResponse", "error": {"code", "detail", ...}}`` (only the code is read)."""

    error: ErrorDetail | None = None


def search_lang(language: str, country: str | None = None) -> str:
    """Brave's ``search_lang`` for an ISO 639-1 code or locale (``ja`` → ``jp``, ``zh-TW`` → ``zh-hant``)."""
    base, _, region = language.strip().lower().replace("_", "-").partition("-")
    region = region or (country or "").strip().lower()
    if base == "ja":
        return "jp"
    if base == "zh":
        return "zh-hant" if region in {"tw", "hk", "mo", "hant"} else "zh-hans"
    if base == "pt":
        return "pt-pt" if region == "pt" else "pt-br"
    if base == "en":
        return "en-gb" if region in {"gb", "uk"} else "en"
    if base in {"no", "nn"}:
        return "nb"
    return base


def country_code(country: str) -> str:
    """Brave's ``country``: upper-case ISO 3166-1 alpha-2 (``UK`` is spelled ``GB``)."""
    code = country.strip().upper()
    return "GB" if code == "UK" else code


def params(query: SearchQuery, *, safesearch: str | None = None, extra_snippets: bool = False) -> dict[str, str]:
    """The query string for ``query``."""
    count = MAX_COUNT if query.exclude_domains else min(query.count, MAX_COUNT)
    out = {"q": with_sites(query.query.strip(), query.include_domains), "count": str(count)}
    if query.country:
        out["country"] = country_code(query.country)
    if query.language:
        out["search_lang"] = search_lang(query.language, query.country)
    if query.recency in FRESHNESS:
        out["freshness"] = FRESHNESS[query.recency]
    if safesearch:
        out["safesearch"] = safesearch
    if extra_snippets:
        out["extra_snippets"] = "true"
    return out


def to_result(item: WebResult) -> SearchResult:
    """One web result as a :class:`SearchResult`: plain text, extra snippets on their own lines."""
    url = (item.url or "").strip()
    parts = [plain(item.description), *(plain(extra) for extra in item.extra_snippets or [])]
    return SearchResult(
        title=plain(item.title) or url,
        url=url,
        snippet="\n".join(part for part in parts if part),
        date=iso_date(item.page_age) or iso_date(item.age),
    )


def to_results(response: Response, query: SearchQuery) -> list[SearchResult]:
    """Map ``web.results``: http(s) URLs only, deduplicated, domain filters applied, first ``count``."""
    return select_results(map(to_result, response.web.results if response.web else []), query)


def plain(text: str | None) -> str:
    """Text without HTML tags and entities, whitespace collapsed."""
    return collapse_space(html.unescape(_TAG.sub("", text or "")))


def iso_date(value: Any) -> str | None:
    """``YYYY-MM-DD`` from ISO 8601, RFC 2822 or ``May 1, 2024``; ``None`` for relative ages (``2 days ago``)."""
    return search.iso_date(value, DATE_LAYOUTS)


def status_kind(status: int, code: str | None) -> str:
    """The :class:`~chorus.search.SearchError` kind for a non-200 status and Brave error ``code``.

    :func:`chorus.search.status_kind`, except that 422 ``SUBSCRIPTION_TOKEN_INVALID`` is ``auth``.
    """
    if status != 429 and code == "SUBSCRIPTION_TOKEN_INVALID":
        return "auth"
    return search.status_kind(status)
