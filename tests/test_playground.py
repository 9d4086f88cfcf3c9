"""The playground at ``/``: served without a key, optional, and used in a real headless Chromium.

The browser tests drive Debian's ``chromium`` over the DevTools Protocol (:mod:`tests.browser`) and
skip with a message when no Chromium is installed. ``CHORUS_PLAYGROUND_SCREENSHOT=docs/playground.png``
also writes the chat screenshot there (how ``docs/playground.png`` is made).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar, post

from chorus.server.routes.playground import PLAYGROUND_DIR, playground_routes
from chorus.testing.config import ACME_KEY, make_config
from chorus.testing.gateway import make_app
from chorus.testing.server import LiveServer
from chorus.testing.upstream import Reply, ScriptedUpstream
from tests.browser import SHIFT, SKIP_REASON, Browser, find_chromium

ROOT = Path(__file__).resolve().parents[1]
KB = Path(__file__).parent / "data" / "kb"
SCREENSHOT_ENV = "CHORUS_PLAYGROUND_SCREENSHOT"

GUIDE = f"""
[[datasets]]
id = "handbook"
workspace = "acme"
name = "Acme handbook"
sources = ["{KB}/*.md", "{KB}/*.txt"]

[[skillsets]]
id = "math"
workspace = "acme"
[[skillsets.tools]]
name = "calculator"
driver = "calculator"
description = "Arithmetic"

[[bots]]
id = "guide"
workspace = "acme"
model = "up/gpt-test"
name = "Acme Guide"
description = "Answers from the Acme handbook, with sources"
backstory = "You are Acme's guide. Cite sources as [n]."
datasets = ["handbook"]
skillsets = ["math"]
retrieval = {{ top_k = 2 }}
"""

ANSWER = "Standard delivery to Europe takes 7 business days [1]: 7 × 24 = 168 hours."


# -- served, without a key, and optional --------------------------------------------------------------


@pytest.fixture(scope="module")
def guide_server(upstream: ScriptedUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = make_config(upstream.base_url, GUIDE, data_dir=str(tmp_path_factory.mktemp("playground")))
    with LiveServer(make_app(config)) as server:
        yield server


def test_playground_page_needs_no_key_and_allows_only_its_own_origin(guide_server: LiveServer) -> None:
    page = httpx.get(guide_server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "http" not in csp  # no CDN, no inline script
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
        response = httpx.get(f"{guide_server.url}/playground/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert "<script>" not in page.text and "https://" not in page.text and "http://" not in page.text
    # only the page and its assets are open: the API still wants a key, unknown paths are 404s
    assert httpx.get(guide_server.url + "/v1/models").status_code == 401
    assert httpx.get(guide_server.url + "/playground/missing.js").status_code == 404
    assert httpx.get(guide_server.url + "/playground/../index.html").status_code == 404


def test_playground_can_be_turned_off(serve_chorus: Any) -> None:
    server = serve_chorus(server_extra="playground = false")
    assert httpx.get(server.url + "/").status_code == 404
    assert httpx.get(server.url + "/playground/playground.js").status_code == 404
    assert httpx.get(server.url + "/v1/models", headers={"authorization": f"Bearer {ACME_KEY}"}).status_code == 200


def test_playground_files_ship_inside_the_package() -> None:
    """The wheel packs ``core/chorus`` whole (hatch ``packages``); the page must live inside it."""
    wheel = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]
    assert "core/chorus" in wheel["packages"]
    assert PLAYGROUND_DIR.is_relative_to(ROOT / "core" / "chorus")
    for name in ("index.html", "assets/playground.js", "assets/playground.css"):
        assert (PLAYGROUND_DIR / name).is_file(), name
    ignored = (ROOT / ".gitignore").read_text().split()
    assert not any(pattern in ("*.html", "*.js", "*.css", "assets/", "playground/") for pattern in ignored)


# -- in a real browser ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> str:
    executable = find_chromium()
    if executable is None:
        pytest.skip(SKIP_REASON)
    return executable


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    with Browser(chromium) as b:
        yield b
        # refused keys and stopped requests are logged as failed loads (source "network"); anything
        # else (an exception, a CSP violation) is a bug
        errors = [e for e in b.errors if not e.startswith("log[network]")]
        assert errors == [], f"the page logged errors: {errors}"


def connect_with(browser: Browser, key: str) -> None:
    browser.click("#api-key")
    browser.evaluate("document.getElementById('api-key').value = ''")
    browser.type(key)
    browser.press("Enter")


def choose(browser: Browser, model: str) -> None:
    """Pick a model the way the keyboard does: set the select's value, then its change event."""
    browser.evaluate(f"(() => {{ const s = document.getElementById('model'); s.focus(); s.value = {model!r};"
                     " s.dispatchEvent(new Event('change')); })()")


def last_turn(browser: Browser, what: str) -> Any:
    return browser.evaluate(f"(() => {{ const t = [...document.querySelectorAll('.turn.assistant')].pop(); return {what}; }})()")


def test_playground_chats_with_a_bot_streams_and_cites(browser: Browser, guide_server: LiveServer,
                                                       up: ScriptedUpstream, tmp_path: Path) -> None:
    browser.goto(guide_server.url + "/")
    assert browser.evaluate("document.activeElement.id") == "api-key"
    # Chorus serves the Responses API: its switch is on
    browser.wait_for("document.body.dataset.responses === 'available'")
    assert browser.evaluate("document.querySelector('input[value=responses]').disabled") is False

    # a wrong key is refused and the key field keeps the focus
    connect_with(browser, "sk-wrong")
    browser.wait_for("document.getElementById('status').dataset.kind === 'error'")
    assert "refused" in browser.evaluate("document.getElementById('status').textContent")
    assert browser.evaluate("sessionStorage.length") == 0

    connect_with(browser, ACME_KEY)
    browser.wait_for("document.activeElement.id === 'message'", what="the message box to get the focus")
    options = browser.evaluate("[...document.querySelectorAll('#model option')].map(o => o.value)")
    assert {"bot/id=guide", "bot/id=support", "model/name=up/gpt-test"} <= set(options)
    assert options.index("bot/id=support") < options.index("model/name=up/gpt-test")  # bots first
    choose(browser, "bot/id=guide")
    # the key is in this tab's session only
    assert browser.evaluate("sessionStorage.getItem('chorus.playground.key')") == ACME_KEY
    assert browser.evaluate("localStorage.length") == 0 and browser.evaluate("document.cookie") == ""
    caps = browser.evaluate("document.getElementById('caps').textContent")
    assert "handbook" in caps and "calculator" in caps and "math" in caps

    # Shift+Enter is a new line, not a send
    browser.click("#message")
    browser.type("How long does delivery")
    browser.press("Enter", SHIFT)
    assert browser.evaluate("document.getElementById('message').value") == "How long does delivery\n"
    assert browser.evaluate("document.querySelectorAll('.turn').length") == 0
    browser.type("to Europe take?")

    up.push(
        Reply(content=None, tool_calls=[{"id": "call_1", "type": "function",
                                         "function": {"name": "calculator", "arguments": '{"expression": "7*24"}'}}]),
        Reply(content=ANSWER, chunk_delay=0.01),
    )
    browser.press("Enter")
    browser.wait_for("document.querySelector('.turn.assistant')?.dataset.state === 'done'", what="the answer")

    assert up.requests[0].json["stream"] is True
    assert up.requests[0].json["messages"][-1]["content"] == "How long does delivery\nto Europe take?"
    assert last_turn(browser, "t.querySelector('.content').textContent") == ANSWER
    assert int(last_turn(browser, "t.dataset.deltas")) > 1, "the answer was not rendered as it streamed"
    # the [1] marker is a numbered link to its source, listed under the answer
    cite = last_turn(browser, "(() => { const a = t.querySelector('a.cite'); return {text: a.textContent,"
                              " href: a.getAttribute('href'), target: a.target, rel: a.rel}; })()")
    assert cite == {"text": "1", "href": "https://acme.test/help/shipping", "target": "_blank", "rel": "noopener noreferrer"}
    sources = last_turn(browser, "[...t.querySelectorAll('.sources li')].map(li => [li.value, li.querySelector('a')?.href])")
    assert sources == [[1, "https://acme.test/help/shipping"]]
    # the tool ran server-side, and the page showed it as it happened
    progress = last_turn(browser, "[...t.querySelectorAll('.progress li')].map(li => li.dataset.type + ' ' + li.textContent)")
    assert len(progress) == 2 and progress[0].startswith("tool.started") and "calculator" in progress[0]
    assert progress[1].startswith("tool.finished")
    # usage (two model calls of 15 tokens each) and latency
    stats = last_turn(browser, "({text: t.querySelector('.stats').textContent, ttft: t.querySelector('.stats').dataset.ttft,"
                               " total: t.querySelector('.stats').dataset.total})")
    assert "20 prompt + 10 completion = 30 tokens" in stats["text"] and "first token" in stats["text"]
    assert 0 <= int(stats["ttft"]) <= int(stats["total"])
    assert browser.evaluate("document.activeElement.id") == "message"

    browser.evaluate("document.activeElement.blur()")
    shot = browser.screenshot(tmp_path / "playground.png")
    assert shot.read_bytes().startswith(b"\x89PNG")
    if os.environ.get(SCREENSHOT_ENV):
        browser.screenshot(os.environ[SCREENSHOT_ENV])


def test_playground_stops_with_escape_and_survives_a_reload_on_a_phone(browser: Browser, guide_server: LiveServer,
                                                                        up: ScriptedUpstream) -> None:
    browser.viewport(390, 844, mobile=True)
    browser.goto(guide_server.url + "/")
    connect_with(browser, ACME_KEY)
    browser.wait_for("document.activeElement.id === 'message'")
    # nothing wider than a phone's screen
    assert browser.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    choose(browser, "model/name=up/gpt-test")
    assert "plain model" in browser.evaluate("document.getElementById('caps').textContent")

    # whatever a model or a user writes is shown as text, never parsed as markup
    markup = '<img src=x onerror="document.title=1"><b>bold</b> [1]'
    up.push(Reply(content=markup))
    browser.click("#message")
    browser.type(markup)
    browser.press("Enter")
    browser.wait_for("document.querySelector('.turn.assistant')?.dataset.state === 'done'")
    assert browser.evaluate("[...document.querySelectorAll('.turn .content')].map(c => c.textContent)") == [markup, markup]
    assert browser.evaluate("document.querySelectorAll('.transcript img, .transcript b').length") == 0
    assert browser.evaluate("document.title") == "Chorus playground"
    assert browser.evaluate("document.querySelectorAll('a.cite').length") == 0  # no sources: [1] is plain text

    browser.click("#new-chat")
    assert browser.evaluate("document.querySelectorAll('.turn').length") == 0
    assert browser.evaluate("document.activeElement.id") == "message"
    up.push(Reply(content="one two three four five six seven eight nine ten", chunk_delay=1.0))
    browser.type("Count slowly")
    browser.press("Enter")
    browser.wait_for("document.querySelector('.turn.assistant .content')?.textContent.startsWith('one')",
                     what="the first words")
    assert browser.evaluate("document.body.dataset.streaming === 'true' && !document.getElementById('stop').hidden")
    browser.press("Escape")
    browser.wait_for("document.querySelector('.turn.assistant')?.dataset.state === 'stopped'")
    assert browser.evaluate("document.body.dataset.streaming") == "false"
    assert up.wait_for_disconnect(timeout=10), "stopping did not close the upstream request"

    # the key and the chosen model stay for this tab's session: a reload reconnects by itself
    browser.reload()
    browser.wait_for("document.getElementById('model').value === 'model/name=up/gpt-test'", what="the reconnect")
    assert browser.evaluate("document.getElementById('api-key').value") == ACME_KEY
    browser.click("#forget")
    assert browser.evaluate("sessionStorage.getItem('chorus.playground.key')") is None
    assert browser.evaluate("document.activeElement.id") == "api-key"


def test_playground_streams_through_the_responses_api(browser: Browser, guide_server: LiveServer,
                                                      up: ScriptedUpstream) -> None:
    """The switch set to Responses: the same answer, citations, progress and usage over POST v1/responses."""
    browser.goto(guide_server.url + "/")
    browser.wait_for("document.body.dataset.responses === 'available'")
    connect_with(browser, ACME_KEY)
    browser.wait_for("document.activeElement.id === 'message'", what="the message box to get the focus")
    choose(browser, "bot/id=guide")
    browser.click("input[value=responses]")
    assert browser.evaluate("document.querySelector('input[value=responses]').checked") is True
    browser.click("#message")
    browser.type("How long does delivery to Europe take?")
    up.push(
        Reply(content=None, tool_calls=[{"id": "call_1", "type": "function",
                                         "function": {"name": "calculator", "arguments": '{"expression": "7*24"}'}}]),
        Reply(content=ANSWER, chunk_delay=0.01),
    )
    browser.press("Enter")
    browser.wait_for("document.querySelector('.turn.assistant')?.dataset.state === 'done'", what="the answer")
    assert last_turn(browser, "t.querySelector('.content').textContent") == ANSWER
    cite = last_turn(browser, "t.querySelector('a.cite').getAttribute('href')")
    assert cite == "https://acme.test/help/shipping"
    progress = last_turn(browser, "[...t.querySelectorAll('.progress li')].map(li => li.dataset.type)")
    assert progress == ["tool.started", "tool.finished"]
    stats = last_turn(browser, "t.querySelector('.stats').textContent")
    assert "20 prompt + 10 completion = 30 tokens" in stats


def test_playground_offers_the_responses_api_only_where_it_is_served(browser: Browser) -> None:
    """The hook: ``OPTIONS v1/responses`` allowing POST turns the switch on; a 404 leaves it off."""
    with LiveServer(Litestar(route_handlers=[*playground_routes()])) as server:
        browser.goto(server.url + "/")
        browser.wait_for("document.body.dataset.responses === 'coming'")
        assert browser.evaluate("document.querySelector('input[value=responses]').disabled") is True
        assert browser.evaluate("document.getElementById('responses-choice').title") == "Responses API coming"

    @post("/v1/responses", sync_to_thread=False)
    def responses() -> dict[str, str]:
        return {"object": "response"}

    with LiveServer(Litestar(route_handlers=[*playground_routes(), responses])) as server:
        browser.goto(server.url + "/")
        browser.wait_for("document.body.dataset.responses === 'available'")
        assert browser.evaluate("document.querySelector('input[value=responses]').disabled") is False
        assert browser.evaluate("document.getElementById('responses-note').hidden") is True
