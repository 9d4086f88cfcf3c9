"""The ``tavily`` driver against recorded Tavily API responses replayed on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chorus_search_tavily", reason="chorus-search-tavily is not installed")

from chorus.config import convert
from chorus.errors import ConfigError
from chorus.plugins.manager import PluginManager
from chorus.search import SearchError, SearchQuery, SearchResult
from chorus.testing.replay import Exchange, ReplayServer, load, unused_port

from chorus_search_tavily import TavilyEngine, TavilySettings
from chorus_search_tavily.countries import country_name

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "tvly-test-4b9e1c07d2"
Make = Callable[..., Awaitable[TavilyEngine]]
GENERAL = {
    "query": "who won the 2024 nobel prize in physics",
    "max_results": 5,
    "topic": "general",
    "search_depth": "basic",
}


def recording(name: str) -> Exchange:
    return load(RECORDINGS / f"{name}.json", api_key=KEY)


def settings(**raw: Any) -> TavilySettings:
    result: TavilySettings = convert(
        {"id": "tavily-web", "driver": "tavily", **raw}, TavilySettings, "search_engines[0]"
    )
    return result


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as replay:  # fails at teardown on a mismatch or an unrequested exchange
        yield replay


@pytest.fixture
async def engine(server: ReplayServer) -> AsyncIterator[Make]:
    """A factory of started engines pointed at the replay server; all are closed at teardown."""
    made: list[TavilyEngine] = []

    async def make(**raw: Any) -> TavilyEngine:
        driver = TavilyEngine(settings(api_key=KEY, base_url=server.url, **raw))
        await driver.start()
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.aclose()


# -- results ---------------------------------------------------------------------------------------


async def test_general_search_results_are_mapped_exactly(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_general"))
    results = await (await engine()).search(SearchQuery(query="who won the 2024 nobel prize in physics"))
    assert results == [
        SearchResult(
            title="The Nobel Prize in Physics 2024 - NobelPrize.org",
            url="https://www.nobelprize.org/prizes/physics/2024/summary/",
            snippet='The Nobel Prize in Physics 2024 was awarded jointly to John J. Hopfield and Geoffrey Hinton "for '
            'foundational discoveries and inventions that enable machine learning with artificial neural networks"',
        ),
        SearchResult(
            title="Press release: The Nobel Prize in Physics 2024 - NobelPrize.org",
            url="https://www.nobelprize.org/prizes/physics/2024/press-release/",
            snippet="The Royal Swedish Academy of Sciences has decided to award the Nobel Prize in Physics 2024 to "
            "John J. Hopfield, Princeton University, NJ, USA and Geoffrey Hinton, University of Toronto, Canada. They "
            "trained artificial neural networks using physics.",
        ),
        SearchResult(
            title="2024 Nobel Prize in Physics - Wikipedia",
            url="https://en.wikipedia.org/wiki/2024_Nobel_Prize_in_Physics",
            snippet="The 2024 Nobel Prize in Physics was awarded to the American physicist John Hopfield and the "
            "British-Canadian computer scientist Geoffrey Hinton.",
        ),
        SearchResult(
            title="Physics Nobel scooped by machine-learning pioneers - Nature",
            url="https://www.nature.com/articles/d41586-024-03213-5",
            snippet="Artificial neural networks, inspired by the brain, have revolutionized scientific research.",
        ),
        SearchResult(
            title="https://www.aps.org/about/news/2024/10/nobel-prize-physics",
            url="https://www.aps.org/about/news/2024/10/nobel-prize-physics",
            snippet="APS congratulates John Hopfield and Geoffrey Hinton on the 2024 Nobel Prize in Physics.",
        ),
    ]


async def test_news_topic_recency_and_included_domains(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_news"))
    driver = await engine(topic="news")
    query = SearchQuery(
        query="federal reserve interest rate decision",
        count=3,
        recency="hour",
        include_domains=["Reuters.com", "https://apnews.com/"],
        country="US",  # Tavily applies country to the general topic only: not sent
    )
    assert await driver.search(query) == [
        SearchResult(
            title="Fed holds rates steady, says inflation remains 'somewhat elevated'",
            url="https://www.reuters.com/markets/us/fed-holds-rates-steady-2025-01-29/",
            snippet="The Federal Reserve held interest rates steady on Wednesday, with policymakers saying they want "
            "to see more progress on inflation before cutting again.",
            date="2025-01-29",
        ),
        SearchResult(
            title="Federal Reserve leaves key rate unchanged",
            url="https://apnews.com/article/federal-reserve-interest-rates-inflation-powell-7c1a9b",
            snippet="The Federal Reserve kept its key interest rate unchanged Wednesday after cutting it three times "
            "last year.",
            date="2025-01-29",
        ),
        SearchResult(
            title="What the Fed decision means for markets",
            url="https://www.reuters.com/markets/us/what-fed-decision-means-markets-2025-01-29/",
            snippet="Treasury yields edged higher after the decision.",
            date="2025-01-29",
        ),
    ]


async def test_country_depth_and_excluded_domains(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_country"))
    driver = await engine(search_depth="advanced")
    query = SearchQuery(
        query="best rail passes for europe",
        count=2,
        recency="year",
        exclude_domains=["wikipedia.org"],
        language="en",  # Tavily has no language filter: not sent
        country="gb",
    )
    assert await driver.search(query) == [
        SearchResult(
            title="Interrail & Eurail passes: a complete guide | Man in Seat 61",
            url="https://www.seat61.com/Railpass-and-Eurail-pass-guide.htm",
            snippet="An Interrail pass gives unlimited train travel in 33 European countries; whether it saves money "
            "depends on how many long journeys you make.",
        ),
        SearchResult(
            title="Ten tips for getting the most out of an Interrail pass",
            url="https://www.theguardian.com/travel/2024/may/11/interrail-pass-europe-train-travel-tips",
            snippet="Book seat reservations early for high-speed trains in France, Spain and Italy.",
        ),
    ]


@pytest.mark.parametrize(
    ("recency", "time_range"), [("hour", "day"), ("day", "day"), ("week", "week"), ("month", "month"), ("year", "year")]
)
async def test_recency_maps_to_time_range(server: ReplayServer, engine: Make, recency: Any, time_range: str) -> None:
    server.expect(recording("search_general").but(json={**GENERAL, "time_range": time_range}))
    query = SearchQuery(query="who won the 2024 nobel prize in physics", recency=recency)
    assert len(await (await engine()).search(query)) == 5


async def test_count_is_capped_and_unknown_countries_are_not_sent(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_general").but(json={**GENERAL, "max_results": 20}))
    query = SearchQuery(query="who won the 2024 nobel prize in physics", count=40, country="XX")
    assert len(await (await engine()).search(query)) == 5


def test_country_codes_map_to_tavily_names() -> None:
    assert [country_name(c) for c in ("US", "gb", "UK", "kr", "ZZ")] == [
        "united states",
        "united kingdom",
        "united kingdom",
        "south korea",
        None,
    ]


async def test_nothing_to_search_sends_no_request(engine: Make) -> None:
    driver = await engine()
    assert await driver.search(SearchQuery(query="")) == []
    assert await driver.search(SearchQuery(query="anything", count=0)) == []


async def test_one_pooled_connection_serves_consecutive_searches(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_general"), recording("search_general"))
    driver = await engine()
    for _ in range(2):
        await driver.search(SearchQuery(query="who won the 2024 nobel prize in physics"))
    assert len(server.received) == 2
    assert server.received[0].peer == server.received[1].peer


# -- errors ----------------------------------------------------------------------------------------


def _status(status: int, body: bytes = b"", content_type: str = "application/json") -> Exchange:
    return Exchange(
        method="POST", path="/search", status=status, body=body, response_headers={"content-type": content_type}
    )


ERRORS: dict[str, tuple[Callable[[], Exchange], str, str]] = {
    "401": (lambda: recording("unauthorized"), "auth", "HTTP 401 (missing or invalid API key)"),
    "403": (lambda: _status(403, b'{"detail":{"error":"Forbidden"}}'), "auth", "HTTP 403"),
    "429": (lambda: recording("rate_limited"), "quota", "HTTP 429 (rate limit exceeded)"),
    "432": (lambda: recording("plan_limit"), "quota", "HTTP 432 (plan usage limit exceeded)"),
    "433": (lambda: _status(433, b'{"detail":{"error":"pay-as-you-go limit"}}'), "quota", "HTTP 433"),
    "400": (lambda: recording("bad_request"), "bad_response", "HTTP 400 (bad request)"),
    "500": (
        lambda: _status(500, b'{"detail":{"error":"Internal Server Error"}}'),
        "unavailable",
        "HTTP 500 (server error)",
    ),
    "502": (lambda: _status(502, b"<html>Bad Gateway</html>", "text/html"), "unavailable", "HTTP 502"),
    "redirect": (
        lambda: _status(307).but(response_headers={"location": "https://tavily.com"}),
        "bad_response",
        "HTTP 307",
    ),
    "html instead of json": (
        lambda: _status(200, b"<html>maintenance</html>", "text/html"),
        "bad_response",
        "not Tavily JSON",
    ),
    "wrong shape": (lambda: _status(200, b'{"results": {"url": "x"}}'), "bad_response", "not Tavily JSON"),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_failures_map_to_error_kinds(server: ReplayServer, engine: Make, case: str) -> None:
    exchange, kind, fragment = ERRORS[case]
    server.expect(exchange())
    with pytest.raises(SearchError) as caught:
        await (await engine()).search(SearchQuery(query="who won the 2024 nobel prize in physics"))
    assert caught.value.kind == kind
    assert fragment in caught.value.message
    assert "tavily-web" in caught.value.message
    assert KEY not in str(caught.value)


async def test_an_upstream_echo_of_the_key_never_reaches_the_message(server: ReplayServer, engine: Make) -> None:
    server.expect(_status(401, f'{{"detail":{{"error":"invalid key {KEY}"}}}}'.encode()))
    with pytest.raises(SearchError) as caught:
        await (await engine()).search(SearchQuery(query="anything"))
    assert caught.value.kind == "auth"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.args)


async def test_a_slow_answer_is_a_timeout(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("search_general").but(delay=5.0))
    driver = await engine(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SearchError) as caught:
        await driver.search(SearchQuery(query="who won the 2024 nobel prize in physics"))
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 2.0


async def test_a_refused_connection_is_unavailable() -> None:
    driver = TavilyEngine(settings(api_key=KEY, base_url=f"http://127.0.0.1:{unused_port()}", timeout=2.0))
    await driver.start()
    try:
        with pytest.raises(SearchError) as caught:
            await driver.search(SearchQuery(query="anything"))
    finally:
        await driver.aclose()
    assert caught.value.kind == "unavailable"
    assert "ConnectError" in caught.value.message


async def test_searching_before_start_or_after_close_is_unavailable() -> None:
    driver = TavilyEngine(settings(api_key=KEY))
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


def test_settings_defaults_and_the_key_stays_hidden() -> None:
    s = settings(api_key=KEY)
    assert (s.base_url, s.timeout, s.topic, s.search_depth) == ("https://api.tavily.com", 10.0, "general", "basic")
    assert KEY not in repr(s)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "missing required field `api_key`"),
        ({"api_key": KEY, "max_results": 3}, "unknown field `max_results`"),
        ({"api_key": KEY, "topic": "sports"}, "topic"),
        ({"api_key": KEY, "search_depth": "deep"}, "search_depth"),
    ],
)
def test_settings_are_strict(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match="search_engines\\[0\\]") as caught:
        settings(**raw)
    assert fragment in str(caught.value)


def test_the_entry_point_registers_the_driver() -> None:
    (ep,) = [ep for ep in metadata.entry_points(group="chorus.search_engines") if ep.name == "tavily"]
    assert ep.load() is TavilyEngine
    assert PluginManager(load_entrypoints=False, env={}).driver("search_engines", "tavily") is TavilyEngine


@pytest.mark.parametrize("url", ["api.tavily.com", "unix:///run/tavily.sock"])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="'tavily-web': base_url must be an http\\(s\\) URL"):
        TavilyEngine(settings(api_key=KEY, base_url=url))
