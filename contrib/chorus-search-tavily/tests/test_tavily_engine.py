"""The ``tavily`` driver against recorded Tavily API responses replayed on loopback.

``test_conformance`` runs the :mod:`chorus.testing.search_engines` checks (errors, timeouts, pooling,
normalisation, secrecy, settings); the other tests pin what is particular to this API.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chorus_search_tavily", reason="chorus-search-tavily is not installed")

from chorus_search_tavily import TavilyEngine, TavilySettings
from chorus_search_tavily.countries import country_name

from chorus.config import convert
from chorus.errors import ConfigError
from chorus.search import SearchQuery, SearchResult
from chorus.testing.replay import Exchange, load
from chorus.testing.search_engines import CHECKS, Check, SearchEngineHarness

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "tvly-test-4b9e1c07d2"
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


def page(results: Sequence[SearchResult]) -> bytes:
    """A search answer holding ``results``."""
    items = [
        {"title": r.title, "url": r.url, "content": r.snippet, "published_date": r.date, "score": 0.5}
        for r in results
    ]
    return json.dumps({"query": "q", "answer": None, "images": [], "results": items, "response_time": 0.4}).encode()


#: Tavily's own failure answers, run by ``check_api_errors_map_to_kinds`` (the kit checks the generic
#: statuses, bodies, timeouts and refusals itself, and that the key shows in no error).
ERRORS: dict[str, tuple[Exchange, str, str]] = {
    "401": (recording("unauthorized"), "auth", "HTTP 401 (missing or invalid API key)"),
    "429": (recording("rate_limited"), "quota", "HTTP 429 (rate limit exceeded)"),
    "432": (recording("plan_limit"), "quota", "HTTP 432 (plan usage limit exceeded)"),
    "433": (
        Exchange(method="POST", path="/search", status=433, body=b'{"detail":{"error":"pay-as-you-go limit"}}'),
        "quota",
        "HTTP 433 (pay-as-you-go limit exceeded)",
    ),
    "400": (recording("bad_request"), "bad_response", "HTTP 400 (bad request)"),
    "500": (
        Exchange(method="POST", path="/search", status=500, body=b'{"detail":{"error":"Internal Server Error"}}'),
        "unavailable",
        "HTTP 500 (server error)",
    ),
}


@pytest.fixture
async def harness() -> AsyncIterator[SearchEngineHarness]:
    """The conformance harness; ``harness.make(**raw)`` starts an engine pointed at its replay server."""
    tavily = SearchEngineHarness(
        engine=TavilyEngine,
        table={"id": "tavily-web", "driver": "tavily", "api_key": KEY},
        recording=recording("search_general"),
        query=SearchQuery(query="who won the 2024 nobel prize in physics"),
        page=page,
        error_body=lambda text: json.dumps({"detail": {"error": text}}).encode(),
        malformed=[b'{"results": {"url": "x"}}'],
        malformed_fragment="not Tavily JSON",
        errors=ERRORS,
    )
    async with tavily:  # fails at teardown on a mismatch or an unrequested exchange
        yield tavily


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: Check, harness: SearchEngineHarness) -> None:
    await check(harness)


# -- results ---------------------------------------------------------------------------------------


async def test_general_search_results_are_mapped_exactly(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("search_general"))
    results = await (await harness.make()).search(SearchQuery(query="who won the 2024 nobel prize in physics"))
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


async def test_news_topic_recency_and_included_domains(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("search_news"))
    driver = await harness.make(topic="news")
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


async def test_country_depth_and_excluded_domains(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("search_country"))
    driver = await harness.make(search_depth="advanced")
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
async def test_recency_maps_to_time_range(harness: SearchEngineHarness, recency: Any, time_range: str) -> None:
    harness.server.expect(recording("search_general").but(json={**GENERAL, "time_range": time_range}))
    query = SearchQuery(query="who won the 2024 nobel prize in physics", recency=recency)
    assert len(await (await harness.make()).search(query)) == 5


async def test_count_is_capped_and_unknown_countries_are_not_sent(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("search_general").but(json={**GENERAL, "max_results": 20}))
    query = SearchQuery(query="who won the 2024 nobel prize in physics", count=40, country="XX")
    assert len(await (await harness.make()).search(query)) == 5


def test_country_codes_map_to_tavily_names() -> None:
    assert [country_name(c) for c in ("US", "gb", "UK", "kr", "ZZ")] == [
        "united states",
        "united kingdom",
        "united kingdom",
        "south korea",
        None,
    ]


# -- settings (registration and base_url are conformance checks) -----------------------------------


def test_settings_defaults() -> None:
    s = settings(api_key=KEY)
    assert (s.base_url, s.timeout, s.topic, s.search_depth) == ("https://api.tavily.com", 10.0, "general", "basic")


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
