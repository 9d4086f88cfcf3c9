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

import email.utils
import html
import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
from chorus.search import SearchQuery, SearchResult

MAX_COUNT = 20
FRESHNESS: dict[str, str] = {"hour": "pd", "day": "pd", "week": "pw", "month": "pm", "year": "py"}
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


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


def to_results(response: Response, query: SearchQuery) -> list[SearchResult]:
    """Map ``web.results``: http(s) URLs only, deduplicated, domain filters applied, first ``count``."""
    include = normalize_domains(query.include_domains)
    exclude = normalize_domains(query.exclude_domains)
    seen: set[str] = set()
    results: list[SearchResult] = []
    for item in response.web.results if response.web else []:
        url = (item.url or "").strip()
        if not url.startswith(("http://", "https://")) or url in seen:
            continue
        if (include and not on_domains(url, include)) or (exclude and on_domains(url, exclude)):
            continue
        seen.add(url)
        parts = [plain(item.description), *(plain(extra) for extra in item.extra_snippets or [])]
        results.append(
            SearchResult(
                title=plain(item.title) or url,
                url=url,
                snippet="\n".join(part for part in parts if part),
                date=iso_date(item.page_age) or iso_date(item.age),
            )
        )
        if len(results) >= query.count:
            break
    return results


def plain(text: str | None) -> str:
    """Text without HTML tags and entities, whitespace collapsed."""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", text or ""))).strip()


def with_sites(text: str, domains: list[str]) -> str:
    """``text`` restricted to ``domains`` with ``site:`` operators (unchanged when there are none)."""
    sites = [f"site:{d}" for d in normalize_domains(domains)]
    if not sites:
        return text
    return f"{text} {sites[0]}" if len(sites) == 1 else f"{text} ({' OR '.join(sites)})"


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
    """``YYYY-MM-DD`` from ISO 8601, RFC 2822 or ``May 1, 2024``; ``None`` for relative ages (``2 days ago``)."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        pass
    for layout in ("%B %d, %Y", "%b %d, %Y"):
        try:
            return datetime.strptime(text, layout).date().isoformat()
        except ValueError:
            pass
    try:
        return email.utils.parsedate_to_datetime(text).date().isoformat()
    except (TypeError, ValueError, IndexError):
        return None


def status_kind(status: int, code: str | None) -> str:
    """The :class:`~chorus.search.SearchError` kind for a non-200 status and Brave error ``code``."""
    if status == 429:
        return "quota"
    if status in (401, 403) or code == "SUBSCRIPTION_TOKEN_INVALID":
        return "auth"
    if status >= 500:
        return "unavailable"
    return "bad_response"
