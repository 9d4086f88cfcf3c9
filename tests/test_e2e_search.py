"""Web search end to end: a bot on the built-in SearXNG driver against a scripted search server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs

import openai
import pytest

from chorus.testing.config import ACME_KEY
from chorus.testing.gateway import serve_with_plugins
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream

RESULTS = [
    {"title": "Rust 2.0 released", "url": "https://news.example/rust-2", "content": "Rust 2.0 ships a new borrow checker.",
     "publishedDate": "2026-11-20T10:00:00"},
    {"title": "Rust blog", "url": "https://blog.rust.example/2-0", "content": "Highlights of the 2.0 release."},
]


class SearchServer:
    """A SearXNG-shaped JSON endpoint whose next answers can be scripted (results or an HTTP status)."""

    def __init__(self) -> None:
        self.queries: list[dict[str, list[str]]] = []
        self.script: list[int | list[dict[str, Any]]] = []
        self.lock = threading.Lock()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        with self.lock:
            self.queries.append(parse_qs(scope["query_string"].decode()))
            step = self.script.pop(0) if self.script else RESULTS
        status, body = (step, b'{"error": "down"}') if isinstance(step, int) else (
            200, json.dumps({"query": "q", "results": step}).encode())
        await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def search_server() -> Iterator[tuple[SearchServer, LiveServer]]:
    app = SearchServer()
    with LiveServer(app) as live:
        yield app, live


@pytest.fixture(scope="module")
def chorus_search(upstream: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> Iterator[LiveServer]:
    _, live = search_server
    extra = f"""
[[search_engines]]
id = "web"
driver = "searxng"
base_url = "{live.url}"

[[bots]]
id = "scout"
workspace = "acme"
model = "up/gpt-test"
backstory = "You answer with current web information."
search = {{ engine = "web", mode = "auto", results = 2 }}

[[bots]]
id = "news"
workspace = "acme"
model = "up/gpt-test"
search = {{ engine = "web", mode = "always", results = 2 }}
perplexity_citations = true

[[bots]]
id = "reader"
workspace = "acme"
model = "up/gpt-test"
search = {{ engine = "web", mode = "always", results = 2, fetch_pages = 2, egress_allow = ["127.0.0.1"] }}

[[bots]]
id = "guarded"
workspace = "acme"
model = "up/gpt-test"
search = {{ engine = "web", mode = "always", results = 1, fetch_pages = 1 }}

[[bots]]
id = "strict"
workspace = "acme"
model = "up/gpt-test"
search = {{ engine = "web", mode = "always", required = true }}
"""
    with serve_with_plugins(upstream.base_url, extra=extra) as server:
        yield server


@pytest.fixture
def sc(chorus_search: LiveServer, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> Iterator[openai.OpenAI]:
    app, _ = search_server
    app.queries.clear()
    app.script.clear()
    with openai.OpenAI(base_url=chorus_search.url + "/v1", api_key=ACME_KEY, max_retries=0, timeout=30) as client:
        yield client


ASK = [{"role": "user", "content": "What is new in Rust 2.0?"}]
SEARCH_CALL = {"id": "w1", "type": "function", "function": {"name": "web_search", "arguments": json.dumps({"query": "Rust 2.0 release", "recency": "week"})}}


def test_auto_mode_tool_and_citations(sc: openai.OpenAI, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> None:
    app, _ = search_server
    up.push(Reply(content=None, tool_calls=[SEARCH_CALL]), Reply(content="Rust 2.0 has a new borrow checker [1][2]."))
    completion = sc.chat.completions.create(model="bot/id=scout", messages=ASK)  # type: ignore[arg-type]
    assert [t["function"]["name"] for t in up.requests[0].json["tools"]] == ["web_search"]
    assert app.queries[0]["q"] == ["Rust 2.0 release"] and app.queries[0]["time_range"] == ["week"]
    result = up.requests[-1].json["messages"][-1]["content"]
    assert "[1] Rust 2.0 released <https://news.example/rust-2>" in result and "[2] Rust blog" in result
    urls = [a.url_citation.url for a in completion.choices[0].message.annotations or []]
    assert urls == ["https://news.example/rust-2", "https://blog.rust.example/2-0"]
    assert not completion.choices[0].message.tool_calls


def test_auto_mode_streaming_citations(sc: openai.OpenAI, up: ScriptedUpstream) -> None:
    up.push(Reply(content=None, tool_calls=[SEARCH_CALL]), Reply(content="New borrow checker [1]."))
    chunks = list(sc.chat.completions.create(model="bot/id=scout", messages=ASK, stream=True))  # type: ignore[arg-type]
    streamed = [a for c in chunks if c.choices and not c.choices[0].finish_reason for a in (c.choices[0].delta.model_dump().get("annotations") or [])]
    assert [a["url_citation"]["url"] for a in streamed] == ["https://news.example/rust-2"]


def test_always_mode_searches_before_the_model_with_request_knobs(sc: openai.OpenAI, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> None:
    app, _ = search_server
    up.push(Reply(content="It ships a new borrow checker [1]."))
    raw = sc.chat.completions.with_raw_response.create(
        model="bot/id=news", messages=ASK,  # type: ignore[arg-type]
        extra_body={"search_domain_filter": ["news.example", "-spam.example"], "search_recency_filter": "month",
                    "web_search_options": {"search_context_size": "low", "user_location": {"type": "approximate", "approximate": {"country": "de"}}}},
    )
    body = json.loads(raw.content)
    query = app.queries[-1]
    assert "site:news.example" in query["q"][0] and query["time_range"] == ["month"]
    system = up.requests[-1].json["messages"][0]["content"]
    assert "[1] Rust 2.0 released (https://news.example/rust-2)" in system
    assert body["citations"] == ["https://news.example/rust-2"]  # the domain filter keeps news.example only
    assert body["search_results"][0]["date"].startswith("2026-11-20")
    for key in ("search_domain_filter", "search_recency_filter", "web_search_options"):
        assert key not in up.requests[-1].json


def test_engine_failure_degrades(sc: openai.OpenAI, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer], caplog: pytest.LogCaptureFixture) -> None:
    app, _ = search_server
    app.script.extend([503, 429])
    up.push(Reply(content="From memory."), Reply(content=None, tool_calls=[SEARCH_CALL]), Reply(content="Still from memory."))
    first = sc.chat.completions.create(model="bot/id=news", messages=ASK)  # type: ignore[arg-type]
    assert first.choices[0].message.content == "From memory." and not first.choices[0].message.annotations
    assert "Sources" not in str(up.requests[-1].json["messages"])
    second = sc.chat.completions.create(model="bot/id=scout", messages=ASK)  # type: ignore[arg-type]
    assert second.choices[0].message.content == "Still from memory."
    assert "No web results" in up.requests[-1].json["messages"][-1]["content"]
    assert any("search engine web failed" in r.message for r in caplog.records)


def test_required_search_fails_the_request(sc: openai.OpenAI, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> None:
    app, _ = search_server
    app.script.append(500)
    with pytest.raises(openai.InternalServerError) as info:
        sc.chat.completions.create(model="bot/id=strict", messages=ASK)  # type: ignore[arg-type]
    assert info.value.status_code == 502 and info.value.code == "search_unavailable"
    assert up.requests == []


def test_models_show_search(sc: openai.OpenAI) -> None:
    assert sc.models.retrieve("bot/id=scout").model_dump()["capabilities"]["search"] == {"engine": "web", "mode": "auto"}


async def page_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    html = b"<html><head><title>Full article</title><script>track()</script></head><body><nav>Menu</nav><main><h1>Rust 2.0</h1><p>The full article text explains the borrow checker in depth.</p></main></body></html>"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
    await send({"type": "http.response.body", "body": html})


def test_fetch_pages_through_the_egress_guard(sc: openai.OpenAI, up: ScriptedUpstream, search_server: tuple[SearchServer, LiveServer]) -> None:
    app, _ = search_server
    with LiveServer(page_app) as page:
        local = [{"title": "Local article", "url": f"{page.url}/article", "content": "Short snippet."}]
        app.script.extend([local, local])
        sc.chat.completions.create(model="bot/id=reader", messages=ASK)  # type: ignore[arg-type]
        system = up.requests[-1].json["messages"][0]["content"]
        assert "The full article text explains the borrow checker in depth." in system
        assert "track()" not in system and "Menu" not in system
        # Without an allow-list the guard refuses the loopback page; the snippet is used instead.
        sc.chat.completions.create(model="bot/id=guarded", messages=ASK)  # type: ignore[arg-type]
        system = up.requests[-1].json["messages"][0]["content"]
        assert "Short snippet." in system and "full article text" not in system
