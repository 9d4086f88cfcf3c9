"""The built-in ``searxng`` driver against recorded SearXNG JSON responses replayed on loopback.

:mod:`chorus.testing.replay` checks each incoming request (method, path, every query parameter,
expected headers) against the recorded exchange (``tests/data/searxng/<name>.json``) and answers
with the recorded response, or ``418`` and a recorded mismatch that fails the test at teardown.
``test_conformance`` runs the :mod:`chorus.testing.search_engines` checks (errors, timeouts, pooling,
normalisation, secrecy, settings); the other tests pin what is particular to SearXNG.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from chorus.contract.config import convert
from chorus.contract.errors import ConfigError
from chorus.contract.search import SearchEngineDriver, SearchQuery, SearchResult
from chorus.testing.replay import Exchange, load
from chorus.testing.search_engines import CHECKS, Check, SearchEngineHarness
from chorus_plugins.search_searxng import SearxngEngine, SearxngSettings, locale

DATA = Path(__file__).parent / "data" / "searxng"
KEY = "searx-proxy-token-5d1e0b"
GENERAL = {"q": "rust async runtime", "format": "json", "pageno": "1", "categories": "general"}


def recording(name: str) -> Exchange:
    return load(DATA / f"{name}.json", api_key=KEY)


def settings(**raw: Any) -> SearxngSettings:
    result: SearxngSettings = convert({"id": "web", "driver": "searxng", **raw}, SearxngSettings, "search_engines[0]")
    return result


def page(results: Sequence[SearchResult]) -> bytes:
    """SearXNG's JSON answer holding ``results``."""
    items = [{"url": r.url, "title": r.title, "content": r.snippet, "publishedDate": r.date} for r in results]
    return json.dumps({"query": "q", "number_of_results": 0, "results": items, "unresponsive_engines": []}).encode()


#: SearXNG's own failure answers, run by ``check_api_errors_map_to_kinds`` (the kit checks the generic
#: statuses, bodies, timeouts and refusals itself, and that the key shows in no error).
ERRORS: dict[str, tuple[Exchange, str, str]] = {
    "json format disabled (403)": (recording("json_disabled"), "auth", "HTTP 403 (is the json format enabled"),
    "limiter (429)": (recording("limiter"), "quota", "HTTP 429 (the instance's bot limiter?"),
    "every engine failed": (
        recording("engines_failed"),
        "unavailable",
        "upstream engines failed (brave: too many requests, duckduckgo: CAPTCHA, google: timeout)",
    ),
}


def searxng_harness(engine: type[SearchEngineDriver] = SearxngEngine) -> SearchEngineHarness:
    """The conformance harness of the driver (``engine``: a variant of it), not started."""
    return SearchEngineHarness(
        engine=engine,
        table={"id": "web", "driver": "searxng", "api_key": KEY},  # a key as an authenticating proxy wants
        base_path="/",  # a trailing slash on base_url is fine
        recording=recording("general"),
        query=SearchQuery(query="rust async runtime"),
        page=page,
        malformed=[b'{"results": {"url": "x"}}'],
        malformed_fragment="not SearXNG JSON",
        errors=ERRORS,
    )


@pytest.fixture
async def harness() -> AsyncIterator[SearchEngineHarness]:
    """The started harness; ``harness.make(**raw)`` starts an engine pointed at its replay server."""
    async with searxng_harness() as searxng:  # fails at teardown on a mismatch or an unrequested exchange
        yield searxng


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: Check, harness: SearchEngineHarness) -> None:
    await check(harness)


# -- results ---------------------------------------------------------------------------------------


async def test_results_are_mapped_exactly_and_count_is_honoured(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("general"))  # a keyless instance (the harness table sets a proxy key)
    results = await (await harness.make(api_key=None)).search(SearchQuery(query="  rust async runtime ", count=4))
    assert results == [
        SearchResult(
            title="Tokio - An asynchronous Rust runtime",
            url="https://tokio.rs/",
            snippet="Tokio is an asynchronous runtime for the Rust programming language. It provides the building "
            "blocks needed for writing networking applications.",
        ),
        SearchResult(
            title="Asynchronous Programming in Rust",
            url="https://rust-lang.github.io/async-book/",
            snippet="This book aims to be a comprehensive, up-to-date guide to using Rust's async language features "
            "and libraries, appropriate for beginners and old hands alike.",
            date="2024-08-07",
        ),
        SearchResult(
            title="tokio::runtime - Rust",
            url="https://docs.rs/tokio/latest/tokio/runtime/index.html",
            snippet="The Tokio runtime. Unlike other Rust programs, asynchronous applications require runtime support.",
        ),
        SearchResult(
            title="GitHub - smol-rs/smol: A small and fast async runtime for Rust",
            url="https://github.com/smol-rs/smol",
            snippet="A small and fast async runtime. This crate simply re-exports other smaller async crates.",
            date="2025-01-14",
        ),
    ]


async def test_every_filter_and_setting_maps_to_its_parameter(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("filtered"))
    driver = await harness.make(categories=["general", "it"], engines=["google", "duckduckgo"], safesearch=1)
    query = SearchQuery(
        query="python 3.13 release notes",
        count=3,
        recency="month",
        include_domains=["python.org", "https://GitHub.com/python"],
        exclude_domains=["discuss.python.org"],
        language="en",
        country="us",
    )
    assert await driver.search(query) == [
        SearchResult(
            title="What's New In Python 3.13 — Python 3.13.1 documentation",
            url="https://docs.python.org/3.13/whatsnew/3.13.html",
            snippet="This article explains the new features in Python 3.13, compared to 3.12. Python 3.13 was released "
            "on October 7, 2024.",
            date="2024-10-07",
        ),
        SearchResult(
            title="Python Release Python 3.13.0 | Python.org",
            url="https://www.python.org/downloads/release/python-3130/",
            snippet="Python 3.13.0 is the newest major release of the Python programming language, and it contains "
            "many new features and optimizations compared to Python 3.12.",
        ),
        SearchResult(
            title="Release v3.13.0 · python/cpython · GitHub",
            url="https://github.com/python/cpython/releases/tag/v3.13.0",
            snippet="Python 3.13.0",
            date="2024-10-07",
        ),
    ]


@pytest.mark.parametrize(
    ("recency", "time_range"), [("hour", "day"), ("day", "day"), ("week", "week"), ("month", "month"), ("year", "year")]
)
async def test_recency_maps_to_time_range(harness: SearchEngineHarness, recency: Any, time_range: str) -> None:
    harness.server.expect(recording("general").but(query={**GENERAL, "time_range": time_range}))
    assert len(await (await harness.make()).search(SearchQuery(query="rust async runtime", recency=recency))) == 5


async def test_one_included_domain_is_a_single_site_operator(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("general").but(query={**GENERAL, "q": "rust async runtime site:tokio.rs"}))
    query = SearchQuery(query="rust async runtime", include_domains=["*.Tokio.rs."])
    results = await (await harness.make()).search(query)
    assert [r.url for r in results] == ["https://tokio.rs/"]


async def test_engines_without_categories_send_no_categories(harness: SearchEngineHarness) -> None:
    expected = {"q": "rust async runtime", "format": "json", "pageno": "1", "engines": "brave"}
    harness.server.expect(recording("general").but(query=expected))
    assert len(await (await harness.make(engines=["brave"])).search(SearchQuery(query="rust async runtime"))) == 5


async def test_a_country_without_a_language_is_not_sent(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("general").but(query=GENERAL))
    assert len(await (await harness.make()).search(SearchQuery(query="rust async runtime", country="DE"))) == 5


@pytest.mark.parametrize(
    ("language", "country", "expected"),
    [("en", None, "en"), ("en", "us", "en-US"), ("DE", "at", "de-AT"), ("pt-BR", "PT", "pt-BR")],
)
def test_locale(language: str, country: str | None, expected: str) -> None:
    assert locale(language, country) == expected


async def test_a_recorded_empty_page_is_no_results(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("no_results"))
    assert await (await harness.make()).search(SearchQuery(query="zxqv unmatched phrase 8f3k2")) == []


async def test_api_key_goes_in_a_bearer_header(harness: SearchEngineHarness) -> None:
    bearer = {"authorization": f"Bearer {KEY}", "accept": "application/json"}
    harness.server.expect(recording("general").but(headers=bearer))
    assert len(await (await harness.make()).search(SearchQuery(query="rust async runtime"))) == 5


# -- settings (registration and base_url are conformance checks) -----------------------------------


def test_settings_defaults() -> None:
    s = settings(base_url="http://127.0.0.1:8888")
    assert (s.categories, s.engines, s.safesearch, s.timeout, s.api_key) == (None, [], None, 10.0, None)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "missing required field `base_url`"),
        ({"base_url": "http://x", "category": ["news"]}, "unknown field `category`"),
        ({"base_url": "http://x", "safesearch": 3}, "safesearch"),
        ({"base_url": "http://x", "engines": "google"}, "engines"),
    ],
)
def test_settings_are_strict(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match="search_engines\\[0\\]") as caught:
        settings(**raw)
    assert fragment in str(caught.value)
