"""Public import path. The search engine driver interface (entry point group ``chorus.search_engines``).

The definitions live in :mod:`chorus.contract.search`; plugins import them from here."""

from chorus.contract.search import (
    HOSTED_SEARCH_STATE,
    HttpSearchEngine,
    Recency,
    SearchEngineDriver,
    SearchEngineSettings,
    SearchError,
    SearchQuery,
    SearchResult,
    collapse_space,
    is_http_url,
    iso_date,
    normalize_domains,
    on_domains,
    select_results,
    status_kind,
    transport_errors,
    with_sites,
)

__all__ = [
    "HOSTED_SEARCH_STATE",
    "HttpSearchEngine",
    "Recency",
    "SearchEngineDriver",
    "SearchEngineSettings",
    "SearchError",
    "SearchQuery",
    "SearchResult",
    "collapse_space",
    "is_http_url",
    "iso_date",
    "normalize_domains",
    "on_domains",
    "select_results",
    "status_kind",
    "transport_errors",
    "with_sites",
]
