"""The ``brave`` driver against recorded Brave Search API responses replayed on loopback.

``test_conformance`` runs the :mod:`chorus.testing.search_engines` checks (errors, timeouts, pooling,
normalisation, secrecy, settings); the other tests pin what is particular to this API.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("chorus_search_brave", reason="chorus-search-brave is not installed")

from chorus_search_brave import BraveEngine, BraveSettings
from chorus_search_brave.mapping import country_code, search_lang

from chorus.config import convert
from chorus.errors import ConfigError
from chorus.search import SearchQuery, SearchResult
from chorus.testing.replay import Exchange, load
from chorus.testing.search_engines import CHECKS, Check, SearchEngineHarness

RECORDINGS = Path(__file__).parent / "recordings"
KEY = "brave-test-token-7f3a9c21"


def recording(name: str) -> Exchange:
    return load(RECORDINGS / f"{name}.json", api_key=KEY)


def settings(**raw: Any) -> BraveSettings:
    result: BraveSettings = convert({"id": "brave-web", "driver": "brave", **raw}, BraveSettings, "search_engines[0]")
    return result


def page(results: Sequence[SearchResult]) -> bytes:
    """A web search answer holding ``results``."""
    items = [{"title": r.title, "url": r.url, "description": r.snippet, "page_age": r.date} for r in results]
    return json.dumps({"type": "search", "web": {"type": "search", "results": items}}).encode()


def error_body(detail: str) -> bytes:
    """Brave's ``ErrorResponse`` (without a code, so that the status alone decides the kind)."""
    return json.dumps({"type": "ErrorResponse", "error": {"detail": detail}}).encode()


ECHO = {"type": "ErrorResponse", "error": {"code": "SUBSCRIPTION_TOKEN_INVALID", "detail": f"token {KEY} is invalid"}}
#: Brave's own failure answers, run by ``check_api_errors_map_to_kinds`` (the kit checks the generic
#: statuses, bodies, timeouts and refusals itself, and that the token shows in no error).
ERRORS: dict[str, tuple[Exchange, str, str]] = {
    "invalid token (422)": (recording("invalid_token"), "auth", "HTTP 422 SUBSCRIPTION_TOKEN_INVALID"),
    "rate limited (429)": (recording("rate_limited"), "quota", "HTTP 429 RATE_LIMITED"),
    "validation (422)": (recording("validation_error"), "bad_response", "HTTP 422 VALIDATION"),
    "the token echoed (422)": (
        Exchange(path="/res/v1/web/search", status=422, body=json.dumps(ECHO).encode()),
        "auth",
        "HTTP 422 SUBSCRIPTION_TOKEN_INVALID",
    ),
}


@pytest.fixture
async def harness() -> AsyncIterator[SearchEngineHarness]:
    """The conformance harness; ``harness.make(**raw)`` starts an engine pointed at its replay server."""
    brave = SearchEngineHarness(
        engine=BraveEngine,
        table={"id": "brave-web", "driver": "brave", "api_key": KEY},
        base_path="/res/v1",
        recording=recording("web_search"),
        query=SearchQuery(query="kubernetes gateway api"),
        page=page,
        error_body=error_body,
        malformed=[b'{"web": {"results": "none"}}'],
        malformed_fragment="not Brave JSON",
        errors=ERRORS,
    )
    async with brave:  # fails at teardown on a mismatch or an unrequested exchange
        yield brave


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_conformance(check: Check, harness: SearchEngineHarness) -> None:
    await check(harness)


# -- results ---------------------------------------------------------------------------------------


async def test_web_search_results_are_mapped_exactly(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("web_search"))
    results = await (await harness.make()).search(SearchQuery(query="kubernetes gateway api"))
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


async def test_every_filter_maps_to_its_parameter_and_domains_are_enforced(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("web_search_filtered"))
    driver = await harness.make(safesearch="strict", extra_snippets=True)
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


async def test_a_response_without_a_web_section_is_no_results(harness: SearchEngineHarness) -> None:
    harness.server.expect(recording("no_web_results"))
    assert await (await harness.make()).search(SearchQuery(query="zxqv unmatched phrase 8f3k2")) == []


@pytest.mark.parametrize(
    ("recency", "freshness"), [("hour", "pd"), ("day", "pd"), ("week", "pw"), ("month", "pm"), ("year", "py")]
)
async def test_recency_maps_to_freshness(harness: SearchEngineHarness, recency: Any, freshness: str) -> None:
    expected = {"q": "kubernetes gateway api", "count": "5", "freshness": freshness}
    harness.server.expect(recording("web_search").but(query=expected))
    assert len(await (await harness.make()).search(SearchQuery(query="kubernetes gateway api", recency=recency))) == 5


async def test_count_is_capped_at_brave_maximum_and_several_sites_are_or_ed(harness: SearchEngineHarness) -> None:
    expected = {"q": "gateway api (site:kubernetes.io OR site:k8s.io)", "count": "20", "country": "GB"}
    harness.server.expect(recording("no_web_results").but(query=expected))
    query = SearchQuery(
        query="gateway api", count=50, include_domains=["https://Kubernetes.io/docs", "*.k8s.io"], country="uk"
    )
    assert await (await harness.make()).search(query) == []


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


# -- settings (registration and base_url are conformance checks) -----------------------------------


def test_settings_defaults() -> None:
    s = settings(api_key=KEY)
    assert (s.base_url, s.timeout, s.safesearch, s.extra_snippets) == (
        "https://api.search.brave.com/res/v1",
        10.0,
        None,
        False,
    )


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
