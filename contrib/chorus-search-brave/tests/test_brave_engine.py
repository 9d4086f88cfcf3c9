"""The ``brave`` driver against recorded Brave Search API responses replayed on loopback."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chorus_search_brave", reason="chorus-search-brave is not installed")

from chorus.config import convert
from chorus.errors import ConfigError
from chorus.plugins.manager import PluginManager
from chorus.search import SearchError, SearchQuery, SearchResult
from chorus.testing.replay import Exchange, ReplayServer, load, unused_port

from chorus_search_brave import BraveEngine, BraveSettings
from chorus_search_brave.mapping import country_code, search_lang

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "brave-test-token-7f3a9c21"
Make = Callable[..., Awaitable[BraveEngine]]


def recording(name: str) -> Exchange:
    return load(RECORDINGS / f"{name}.json", api_key=KEY)


def settings(**raw: Any) -> BraveSettings:
    result: BraveSettings = convert({"id": "brave-web", "driver": "brave", **raw}, BraveSettings, "search_engines[0]")
    return result


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as replay:  # fails at teardown on a mismatch or an unrequested exchange
        yield replay


@pytest.fixture
async def engine(server: ReplayServer) -> AsyncIterator[Make]:
    """A factory of started engines pointed at the replay server; all are closed at teardown."""
    made: list[BraveEngine] = []

    async def make(**raw: Any) -> BraveEngine:
        driver = BraveEngine(settings(api_key=KEY, base_url=f"{server.url}/res/v1", **raw))
        await driver.start()
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.aclose()


# -- results ---------------------------------------------------------------------------------------


async def test_web_search_results_are_mapped_exactly(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("web_search"))
    results = await (await engine()).search(SearchQuery(query="kubernetes gateway api"))
    assert results == [
        SearchResult(
            title="Gateway API | Kubernetes",
            url="https://kubernetes.io/docs/concepts/services-networking/gateway/",
            snippet="Gateway API is a family of API kinds that provide dynamic infrastructure provisioning and "
            "advanced traffic routing.",
            date="2024-11-19",
        ),
        SearchResult(
            title="Introduction - Kubernetes Gateway API",
            url="https://gateway-api.sigs.k8s.io/",
            snippet="Gateway API is an official Kubernetes project focused on L4 and L7 routing in Kubernetes. This "
            "project represents the next generation of Kubernetes Ingress, Load Balancing, and Service Mesh APIs.",
            date=None,
        ),
        SearchResult(
            title="Ingress vs. Gateway API: what's the difference?",
            url="https://www.redhat.com/en/blog/kubernetes-ingress-vs-gateway-api",
            snippet="Both route north-south traffic, but the Gateway API splits responsibilities between "
            "infrastructure providers, cluster operators & application developers.",
            date="2025-02-03",
        ),
        SearchResult(
            title="GitHub - kubernetes-sigs/gateway-api: Repository for the next iteration of composite service "
            "(e.g. Ingress) and load balancing APIs.",
            url="https://github.com/kubernetes-sigs/gateway-api",
            snippet="Repository for the next iteration of composite service (e.g. Ingress) and load balancing APIs. "
            "- kubernetes-sigs/gateway-api",
            date=None,
        ),
        SearchResult(
            title="Gateway API v1.2: WebSockets, Timeouts, Retries, and More | Kubernetes",
            url="https://kubernetes.io/blog/2024/11/21/gateway-api-v1-2/",
            snippet="Kubernetes SIG Network is delighted to announce the general availability of Gateway API v1.2!",
            date="2024-11-21",
        ),
    ]


async def test_every_filter_maps_to_its_parameter_and_domains_are_enforced(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("web_search_filtered"))
    driver = await engine(safesearch="strict", extra_snippets=True)
    query = SearchQuery(
        query="rust 2024 edition",
        count=3,
        recency="month",
        include_domains=["rust-lang.org"],
        exclude_domains=["users.rust-lang.org"],
        language="en",
        country="GB",
    )
    assert await driver.search(query) == [
        SearchResult(
            title="Announcing Rust 1.85.0 and Rust 2024 | Rust Blog",
            url="https://blog.rust-lang.org/2025/02/20/Rust-1.85.0.html",
            snippet="The Rust team is happy to announce a new version of Rust, 1.85.0. This stabilizes the 2024 "
            "edition as well.\nRust 2024 is the largest edition we have released.\n"
            "You can migrate with cargo fix --edition.",
            date="2025-02-20",
        ),
        SearchResult(
            title="Rust 2024 - The Rust Edition Guide",
            url="https://doc.rust-lang.org/edition-guide/rust-2024/index.html",
            snippet="The Rust 2024 Edition was stabilized in 1.85.0. Info: RFC #3501.",
            date="2025-03-02",
        ),
        SearchResult(
            title="Rust Programming Language",
            url="https://www.rust-lang.org/",
            snippet="A language empowering everyone to build reliable and efficient software.",
            date=None,
        ),
    ]


async def test_a_response_without_a_web_section_is_no_results(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("no_web_results"))
    assert await (await engine()).search(SearchQuery(query="zxqv unmatched phrase 8f3k2")) == []


@pytest.mark.parametrize(
    ("recency", "freshness"), [("hour", "pd"), ("day", "pd"), ("week", "pw"), ("month", "pm"), ("year", "py")]
)
async def test_recency_maps_to_freshness(server: ReplayServer, engine: Make, recency: Any, freshness: str) -> None:
    expected = {"q": "kubernetes gateway api", "count": "5", "freshness": freshness}
    server.expect(recording("web_search").but(query=expected))
    assert len(await (await engine()).search(SearchQuery(query="kubernetes gateway api", recency=recency))) == 5


async def test_count_is_capped_at_brave_maximum_and_several_sites_are_or_ed(server: ReplayServer, engine: Make) -> None:
    expected = {"q": "gateway api (site:kubernetes.io OR site:k8s.io)", "count": "20", "country": "GB"}
    server.expect(recording("no_web_results").but(query=expected))
    query = SearchQuery(
        query="gateway api", count=50, include_domains=["https://Kubernetes.io/docs", "*.k8s.io"], country="uk"
    )
    assert await (await engine()).search(query) == []


@pytest.mark.parametrize(
    ("language", "country", "code"),
    [
        ("en", None, "en"),
        ("en-US", None, "en"),
        ("en", "GB", "en-gb"),
        ("ja", None, "jp"),
        ("zh", None, "zh-hans"),
        ("zh-TW", None, "zh-hant"),
        ("zh", "HK", "zh-hant"),
        ("pt", None, "pt-br"),
        ("pt", "PT", "pt-pt"),
        ("no", None, "nb"),
        ("de", "AT", "de"),
    ],
)
def test_language_codes_follow_brave_spelling(language: str, country: str | None, code: str) -> None:
    assert search_lang(language, country) == code


def test_country_codes_are_upper_case_and_uk_is_gb() -> None:
    assert [country_code(c) for c in ("us", "UK", " de ")] == ["US", "GB", "DE"]


async def test_nothing_to_search_sends_no_request(engine: Make) -> None:
    driver = await engine()
    assert await driver.search(SearchQuery(query="   ")) == []
    assert await driver.search(SearchQuery(query="anything", count=0)) == []


async def test_one_pooled_connection_serves_consecutive_searches(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("web_search"), recording("web_search"))
    driver = await engine()
    for _ in range(2):
        await driver.search(SearchQuery(query="kubernetes gateway api"))
    assert len(server.received) == 2
    assert server.received[0].peer == server.received[1].peer


# -- errors ----------------------------------------------------------------------------------------


def _status(status: int, body: bytes = b"", content_type: str = "application/json") -> Exchange:
    return Exchange(
        path="/res/v1/web/search", status=status, body=body, response_headers={"content-type": content_type}
    )


ERRORS: dict[str, tuple[Callable[[], Exchange], str, str]] = {
    "invalid token (422)": (lambda: recording("invalid_token"), "auth", "HTTP 422 SUBSCRIPTION_TOKEN_INVALID"),
    "rate limited (429)": (lambda: recording("rate_limited"), "quota", "HTTP 429 RATE_LIMITED"),
    "validation (422)": (lambda: recording("validation_error"), "bad_response", "HTTP 422 VALIDATION"),
    "401": (lambda: _status(401, b'{"type":"ErrorResponse","error":{"code":"UNAUTHORIZED"}}'), "auth", "HTTP 401"),
    "403": (lambda: _status(403, b"<html>Forbidden</html>", "text/html"), "auth", "HTTP 403"),
    "500": (lambda: _status(500, b"Internal Server Error", "text/plain"), "unavailable", "HTTP 500"),
    "503": (lambda: _status(503, b"<html>upstream connect error</html>", "text/html"), "unavailable", "HTTP 503"),
    "redirect": (
        lambda: _status(302, b"", "text/html").but(response_headers={"location": "/login"}),
        "bad_response",
        "HTTP 302",
    ),
    "html instead of json": (
        lambda: _status(200, b"<!doctype html><title>Brave</title>", "text/html"),
        "bad_response",
        "not Brave JSON",
    ),
    "wrong shape": (lambda: _status(200, b'{"web": {"results": "none"}}'), "bad_response", "not Brave JSON"),
}


@pytest.mark.parametrize("case", list(ERRORS))
async def test_failures_map_to_error_kinds(server: ReplayServer, engine: Make, case: str) -> None:
    exchange, kind, fragment = ERRORS[case]
    server.expect(exchange())
    with pytest.raises(SearchError) as caught:
        await (await engine()).search(SearchQuery(query="kubernetes gateway api"))
    assert caught.value.kind == kind
    assert fragment in caught.value.message
    assert "brave-web" in caught.value.message
    assert KEY not in str(caught.value)


async def test_an_upstream_echo_of_the_key_never_reaches_the_message(server: ReplayServer, engine: Make) -> None:
    body = (
        f'{{"type":"ErrorResponse","error":{{"code":"SUBSCRIPTION_TOKEN_INVALID","detail":"token {KEY} is invalid"}}}}'
    )
    server.expect(_status(422, body.encode()))
    with pytest.raises(SearchError) as caught:
        await (await engine()).search(SearchQuery(query="kubernetes gateway api"))
    assert caught.value.kind == "auth"
    assert KEY not in str(caught.value) and KEY not in repr(caught.value.args)


async def test_a_slow_answer_is_a_timeout(server: ReplayServer, engine: Make) -> None:
    server.expect(recording("web_search").but(delay=5.0))
    driver = await engine(timeout=0.3)
    started = time.monotonic()
    with pytest.raises(SearchError) as caught:
        await driver.search(SearchQuery(query="kubernetes gateway api"))
    assert caught.value.kind == "timeout"
    assert time.monotonic() - started < 2.0


async def test_a_refused_connection_is_unavailable() -> None:
    driver = BraveEngine(settings(api_key=KEY, base_url=f"http://127.0.0.1:{unused_port()}/res/v1", timeout=2.0))
    await driver.start()
    try:
        with pytest.raises(SearchError) as caught:
            await driver.search(SearchQuery(query="anything"))
    finally:
        await driver.aclose()
    assert caught.value.kind == "unavailable"
    assert "ConnectError" in caught.value.message


async def test_searching_before_start_or_after_close_is_unavailable() -> None:
    driver = BraveEngine(settings(api_key=KEY))
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
    assert (s.base_url, s.timeout, s.safesearch, s.extra_snippets) == (
        "https://api.search.brave.com/res/v1",
        10.0,
        None,
        False,
    )
    assert KEY not in repr(s)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({}, "missing required field `api_key`"),
        ({"api_key": KEY, "safe_search": "off"}, "unknown field `safe_search`"),
        ({"api_key": KEY, "safesearch": "none"}, "safesearch"),
    ],
)
def test_settings_are_strict(raw: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match="search_engines\\[0\\]") as caught:
        settings(**raw)
    assert fragment in str(caught.value)


def test_the_entry_point_registers_the_driver() -> None:
    (ep,) = [ep for ep in metadata.entry_points(group="chorus.search_engines") if ep.name == "brave"]
    assert ep.load() is BraveEngine
    assert PluginManager(load_entrypoints=False, env={}).driver("search_engines", "brave") is BraveEngine


@pytest.mark.parametrize("url", ["api.search.brave.com/res/v1", "file:///tmp/brave"])
def test_base_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="'brave-web': base_url must be an http\\(s\\) URL"):
        BraveEngine(settings(api_key=KEY, base_url=url))
