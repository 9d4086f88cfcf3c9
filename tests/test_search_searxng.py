"""The built-in ``searxng`` driver against recorded SearXNG JSON responses replayed on loopback.

:mod:`chorus.testing.replay` checks each incoming request (method, path, every query parameter,
expected headers) against the recorded exchange (``tests/data/searxng/<name>.json``) and answers
with the recorded response, or ``418`` and a recorded mismatch that fails the test at teardown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from chorus.config import convert
from chorus.errors import ConfigError
from chorus.plugins.manager import PluginManager
from chorus.search import SearchError, SearchQuery, SearchResult
from chorus.testing.replay import Exchange, ReplayServer, load, unused_port

from chorus_plugins.search_searxng import SearxngEngine, SearxngSettings, locale

DATA = Path(__file__).parent / "data" / "searxng"
KEY = "searx-proxy-token-5d1e0b"

# -- fixtures -------------------------------------------------------------------------------------

Make = Callable[..., Awaitable[SearxngEngine]]
GENERAL = {"q": "rust async runtime", "format": "json", "pageno": "1", "categories": "general"}


def recording(name: str) -> Exchange:
    return load(DATA / f"{name}.json", api_key=KEY)


def settings(**raw: Any) -> SearxngSettings:
    result: SearxngSettings = convert({"id": "web", "driver": "searxng", **raw}, SearxngSettings, "search_engines[0]")
    return result


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as replay:  # fails at teardown on a mismatch or an unrequested exchange
        yield replay


@pytest.fixture
async def engine(server: ReplayServer) -> AsyncIterator[Make]:
    """A factory of started engines pointed at the replay server; all are closed at teardown."""
    made: list[SearxngEngine] = []

    async def make(**raw: Any) -> SearxngEngine:
        driver = SearxngEngine(settings(base_url=server.url + "/", **raw))
        await driver.start()
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.aclose()


# -- results ---------------------------------------------------------------------------------------


async def test_results_are_mapped_exactly_and_count_is_honoured(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general"))
    results = await (await engine()).search(SearchQuery(query="  rust async runtime ", count=4))
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


async def test_every_filter_and_setting_maps_to_its_parameter(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("filtered"))
    driver = await engine(categories=["general", "it"], engines=["google", "duckduckgo"], safesearch=1)
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
async def test_recency_maps_to_time_range(server: ReplayServer, engine: Make, recency: Any, time_range: str) -> None:
    server.expect(recording("general").but(query={**GENERAL, "time_range": time_range}))
    assert len(await (await engine()).search(SearchQuery(query="rust async runtime", recency=recency))) == 5


async def test_one_included_domain_is_a_single_site_operator(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general").but(query={**GENERAL, "q": "rust async runtime site:tokio.rs"}))
    results = await (await engine()).search(SearchQuery(query="rust async runtime", include_domains=["*.Tokio.rs."]))
    assert [r.url for r in results] == ["https://tokio.rs/"]


async def test_engines_without_categories_send_no_categories(server: ReplayServer, engine: Make) -> None:
    expected = {"q": "rust async runtime", "format": "json", "pageno": "1", "engines": "brave"}
    server.expect(recording("general").but(query=expected))
    assert len(await (await engine(engines=["brave"])).search(SearchQuery(query="rust async runtime"))) == 5


async def test_a_country_without_a_language_is_not_sent(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general").but(query=GENERAL))
    assert len(await (await engine()).search(SearchQuery(query="rust async runtime", country="DE"))) == 5


@pytest.mark.parametrize(
    ("language", "country", "expected"),
    [("en", None, "en"), ("en", "us", "en-US"), ("DE", "at", "de-AT"), ("pt-BR", "PT", "pt-BR")],
)
def test_locale(language: str, country: str | None, expected: str) -> None:
    assert locale(language, country) == expected


async def test_no_results_is_an_empty_list(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("no_results"))
    assert await (await engine()).search(SearchQuery(query="zxqv unmatched phrase 8f3k2")) == []


async def test_nothing_to_search_sends_no_request(engine: Make) -> None:
    driver = await engine()
    assert await driver.search(SearchQuery(query="  ")) == []
    assert await driver.search(SearchQuery(query="anything", count=0)) == []


async def test_api_key_goes_in_a_bearer_header(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general").but(headers={"authorization": f"Bearer {KEY}", "accept": "application/json"}))
    assert len(await (await engine(api_key=KEY)).search(SearchQuery(query="rust async runtime"))) == 5


async def test_one_pooled_connection_serves_consecutive_searches(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general"), recording("general"))
    driver = await engine()
    for _ in range(2):
        await driver.search(SearchQuery(query="rust async runtime"))
    assert len(server.received) == 2
    assert server.received[0].peer == server.received[1].peer


# -- errors ----------------------------------------------------------------------------------------


def _status(status: int, body: bytes = b"", content_type: str = "text/html; charset=utf-8") -> Exchange:
    return Exchange(path="/search", status=status, body=body, response_headers={"content-type": content_type})


ERRORS: dict[str, tuple[Callable[[], Exchange], str, str]] = {
    "json format disabled (403)": (lambda: recording("json_disabled"), "auth", "HTTP 403 (is the json format enabled"),
    "limiter (429)": (lambda: recording("limiter"), "quota", "HTTP 429 (the instance's bot limiter?"),
    "401 from a proxy": (lambda: _status(401, b"Unauthorized"), "auth", "HTTP 401"),
    "500": (lambda: _status(500, b"<h1>Internal Server Error</h1>"), "unavailable", "HTTP 500"),
    "502 from a proxy": (lambda: _status(502, b"<html>502 Bad Gateway</html>"), "unavailable", "HTTP 502"),
    "redirect": (lambda: _status(302).but(response_headers={"location": "/"}), "bad_response", "HTTP 302"),
    "html instead of json": (
        lambda: _status(200, b"<!DOCTYPE html><title>SearXNG</title>"),
        "bad_response",
        "not SearXNG JSON",
    ),
    "wrong shape": (
        lambda: _status(200, b'{"results": {"url": "x"}}', "application/json"),
        "bad_response",
        "not SearXNG JSON",
    ),
    "every engine failed": (
        lambda: recording("engines_failed"),
        "unavailable",
        "upstream engines failed (brave: too many requests, duckduckgo: CAPTCHA, google: timeout)",
    ),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_failures_map_to_error_kinds(server: ReplayServer, engine: Make, case: str) -> None:
    exchange, kind, fragment = ERRORS[case]
    server.expect(exchange())
    with pytest.raises(SearchError) as caught:
        await (await engine(api_key=KEY)).search(SearchQuery(query="rust async runtime"))
    assert caught.value.kind == kind
    assert fragment in caught.value.message
    assert "'web'" in caught.value.message
    assert KEY not in str(caught.value)


async def test_an_upstream_echo_of_the_key_never_reaches_the_message(server: ReplayServer, engine: Make) -> None:
    server.expect(_status(403, f"token {KEY} is not allowed".encode(), "text/plain"))
    with pytest.raises(SearchError) as caught:
        await (await engine(api_key=KEY)).search(SearchQuery(query="anything"))
    assert caught.value.kind == "auth"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.args)


async def test_a_slow_answer_is_a_timeout(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("general").but(delay=5.0))
    driver = await engine(timeout=0.3)
    with pytest.raises(SearchError) as caught:  # the answer comes after 5 s: an error means the timeout cut it
        await driver.search(SearchQuery(query="rust async runtime"))
    assert caught.value.kind == "timeout"


async def test_a_refused_connection_is_unavailable() -> None:
    driver = SearxngEngine(settings(base_url=f"http://127.0.0.1:{unused_port()}", timeout=2.0))
    await driver.start()
    try:
        with pytest.raises(SearchError) as caught:
            await driver.search(SearchQuery(query="anything"))
    finally:
        await driver.aclose()
    assert caught.value.kind == "unavailable"
    assert "ConnectError" in caught.value.message


async def test_searching_before_start_or_after_close_is_unavailable() -> None:
    driver = SearxngEngine(settings(base_url="http://127.0.0.1:8888"))
    with pytest.raises(SearchError) as caught:
        await driver.search(SearchQuery(query="anything"))
    assert caught.value.kind == "unavailable"
    await driver.start()
    await driver.start()  # idempotent
    await driver.aclose()
    await driver.aclose()
    with pytest.raises(SearchError):
        await driver.search(SearchQuery(query="anything"))


# -- settings and registration ---------------------------------------------------------------------


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


def test_the_entry_point_registers_the_driver() -> None:
    (ep,) = [ep for ep in metadata.entry_points(group="chorus.search_engines") if ep.name == "searxng"]
    assert ep.load() is SearxngEngine
    assert PluginManager(load_entrypoints=False, env={}).driver("search_engines", "searxng") is SearxngEngine


@pytest.mark.parametrize("url", ["127.0.0.1:8888", "ftp://searx.example", "http://"])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="'web': base_url must be an http\\(s\\) URL"):
        SearxngEngine(settings(base_url=url))
