"""The built-in tools ``http``, ``fetch_url``, ``calculator`` and ``current_time``.

HTTP tools run against a real loopback server reached through an egress-guarded client whose
allow-list names it; names resolve through a fake resolver (no real DNS, no non-loopback traffic).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import parse_qsl
from zoneinfo import ZoneInfo

import httpx
import pytest

from chorus.contract.config import convert
from chorus.contract.egress import EgressDenied, EgressPolicy
from chorus.contract.errors import ConfigError
from chorus.contract.tools import ToolContext, ToolDriver, ToolError, ToolSettings
from chorus.plugins.manager import PluginManager
from chorus.testing.server import LiveServer
from chorus_plugins.tools.calculator import CalculatorSettings, CalculatorTool, evaluate
from chorus_plugins.tools.current_time import CurrentTimeSettings, CurrentTimeTool
from chorus_plugins.tools.fetch_url import FetchUrlSettings, FetchUrlTool, html_to_text
from chorus_plugins.tools.http import HttpTool, HttpToolSettings

SECRET = "sk-orders-canary-5f2b9c1d7e"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>  Orders &amp; Returns </title>
<style>body { color: red }</style><script>var tracking = "SCRIPT-CANARY";</script></head>
<body>
<header><a href="/">Home</a> NAV-CANARY</header>
<nav><ul><li>Menu item NAV-CANARY</li></ul></nav>
<main>
<h1>Returning an order</h1>
<p>You can return   any item
within <b>30 days</b>.</p>
<h2>Steps</h2>
<ul><li>Open your orders</li><li>Pick the item</li></ul>
<div hidden>HIDDEN-CANARY</div>
<table><tr><th>Fee</th><td>none</td></tr></table>
<pre>line one
  line two</pre>
</main>
<footer>FOOTER-CANARY</footer>
<noscript>NOSCRIPT-CANARY</noscript>
</body></html>
"""


def _resolver(host: str, port: int, *args: Any, **kwargs: Any) -> list[tuple[Any, ...]]:
    """Fake DNS: ``localhost`` and literal loopback only."""
    if host not in ("localhost", "127.0.0.1"):
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the fake DNS")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


async def _send(send: Any, status: int, body: bytes, content_type: str, extra: list[tuple[bytes, bytes]] = []) -> None:  # noqa: B006
    headers = [(b"content-type", content_type.encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path: str = scope["path"]
    raw_path = scope["raw_path"].decode()
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    query = parse_qsl(scope["query_string"].decode(), keep_blank_values=True)
    echo = {
        "method": scope["method"],
        "path": path,
        "raw_path": raw_path,
        "query": query,
        "body": json.loads(body) if body else None,
        "content_type": headers.get("content-type"),
        "authorization": headers.get("authorization"),
        "x_api_key": headers.get("x-api-key"),
    }
    if path == "/text":
        await _send(send, 200, "plain text ✓".encode(), "text/plain; charset=utf-8")
    elif path == "/big":
        await _send(send, 200, b"y" * 200_000, "text/plain")
    elif path == "/bigjson":
        await _send(send, 200, json.dumps({"items": ["z" * 100] * 2000}).encode(), "application/json")
    elif path == "/reflect":  # a server that echoes credentials back
        auth = headers.get("authorization", "")
        reflected = {"you_sent": auth, "token": auth.split()[-1], "key": headers.get("x-api-key")}
        await _send(send, 200, json.dumps(reflected).encode(), "application/json")
    elif path == "/fail":
        await _send(send, 503, f"upstream down; auth was {headers.get('authorization')}".encode(), "text/plain")
    elif path == "/missing":
        await _send(send, 404, b'{"error": "no such order"}', "application/json")
    elif path == "/slow":
        await asyncio.sleep(1.5)
        await _send(send, 200, b"late", "text/plain")
    elif path == "/elsewhere":  # redirect to another origin (same server, other host name)
        port = headers["host"].rsplit(":", 1)[1]
        location = f"http://localhost:{port}/echo".encode()
        await _send(send, 302, b"", "text/plain", [(b"location", location)])
    elif path == "/samehost":
        await _send(send, 307, b"", "text/plain", [(b"location", b"/echo")])
    elif path == "/metadata-redirect":
        await _send(send, 302, b"", "text/plain", [(b"location", b"http://169.254.169.254/latest/meta-data/")])
    elif path == "/page.html":
        await _send(send, 200, PAGE.encode(), "text/html")
    elif path == "/latin1.html":
        html = (
            "<html><head><meta charset='iso-8859-1'><title>Caf\xe9</title></head>"
            "<body><p>cr\xe8me br\xfbl\xe9e</p></body></html>"
        )
        await _send(send, 200, html.encode("latin-1"), "text/html")
    elif path == "/image.png":
        await _send(send, 200, b"\x89PNG\r\n", "image/png")
    else:
        await _send(send, 200, json.dumps(echo).encode(), "application/json")


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    with LiveServer(_app) as live:
        yield live


@pytest.fixture
async def ctx() -> AsyncIterator[ToolContext]:
    policy = EgressPolicy(["127.0.0.1", "localhost"], resolver=_resolver)
    async with policy.client(timeout=10) as client:
        yield ToolContext(workspace="acme", bot=None, request_id="req-1", deadline=time.monotonic() + 30, http=client)


def _make(driver: type[ToolDriver], policy: EgressPolicy | None = None, **raw: Any) -> Any:
    raw = {"name": "t", "driver": "x", **raw}
    settings = convert(raw, driver.settings_type, "skillsets[0].tools[0]")
    return driver(settings, policy or EgressPolicy(["127.0.0.1"], resolver=_resolver))


def _http(server: LiveServer, url: str, **raw: Any) -> HttpTool:
    return _make(HttpTool, url=server.url + url, **raw)  # type: ignore[no-any-return]


# ---------------------------------------------------------------- entry points and settings


def test_entry_points_load() -> None:
    pm = PluginManager()
    assert not [f for f in pm.failures if f.group == "chorus.tools"]
    expected = {
        "http": HttpTool, "fetch_url": FetchUrlTool, "calculator": CalculatorTool, "current_time": CurrentTimeTool
    }
    for name, cls in expected.items():
        assert pm.driver("tools", name) is cls
        assert issubclass(cls.settings_type, ToolSettings)


@pytest.mark.parametrize("driver", [HttpTool, FetchUrlTool, CalculatorTool, CurrentTimeTool])
def test_unknown_keys_are_config_errors(driver: type[ToolDriver]) -> None:
    raw = {"name": "t", "driver": "x", "bogus_key": 1}
    if driver is HttpTool:
        raw["url"] = "https://api.example.com/"
    with pytest.raises(ConfigError, match="bogus_key"):
        convert(raw, driver.settings_type, "skillsets[0].tools[0]")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "url"),
        ({"url": "ftp://example.com/"}, "http"),
        ({"url": "https://{host}.example.com/"}, "placeholders"),
        ({"url": "https://api.example.com/", "method": "BREW"}, "method"),
        ({"url": "https://api.example.com/", "timeout": 0}, "timeout"),
        ({"url": "https://api.example.com/", "parameters": {"type": "string"}}, "object"),
        ({"url": "https://api.example.com/", "headers": {"X": "a\r\nInjected: 1"}}, "line breaks"),
    ],
)
def test_http_settings_are_validated(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        convert({"name": "t", "driver": "http", **raw}, HttpToolSettings, "skillsets[0].tools[0]")


def test_settings_repr_hides_header_values() -> None:
    settings = convert(
        {"name": "t", "driver": "http", "url": "https://x.example/", "headers": {"Authorization": f"Bearer {SECRET}"}},
        HttpToolSettings,
        "w",
    )
    assert SECRET not in repr(settings)


def test_other_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="timezone"):
        convert({"name": "t", "driver": "current_time", "timezone": "Mars/Olympus"}, CurrentTimeSettings, "w")
    with pytest.raises(ConfigError, match="max_chars"):
        convert({"name": "t", "driver": "fetch_url", "max_chars": 0}, FetchUrlSettings, "w")
    with pytest.raises(ConfigError, match="max_length"):
        convert({"name": "t", "driver": "calculator", "max_length": 0}, CalculatorSettings, "w")


# ---------------------------------------------------------------- http


def test_http_spec_derives_parameters_from_placeholders() -> None:
    url = "https://api.example.com/orders/{order_id}/lines/{line}?v={version}"
    tool = _make(HttpTool, url=url, description="Lines")
    (spec,) = tool.tools()
    assert spec.name == "t" and spec.description == "Lines"
    assert spec.parameters["properties"] == {n: {"type": "string"} for n in ("order_id", "line", "version")}
    assert spec.parameters["required"] == ["order_id", "line", "version"]
    given = {"type": "object", "properties": {"q": {"type": "integer"}}, "required": ["q"]}
    assert _make(HttpTool, url="https://api.example.com/", parameters=given).tools()[0].parameters == given


async def test_http_get_path_template_and_query(server: LiveServer, ctx: ToolContext) -> None:
    tool = _http(server, "/orders/{order_id}", headers={"Authorization": f"Bearer {SECRET}"})
    result = await tool.call("t", {"order_id": "A 1/../x?y#z", "status": "open", "limit": 5, "all": True}, ctx)
    assert result["status"] == 200
    body = result["body"]
    assert body["method"] == "GET"
    assert body["raw_path"] == "/orders/A%201%2F..%2Fx%3Fy%23z"  # one encoded segment, no traversal
    assert dict(body["query"]) == {"status": "open", "limit": "5", "all": "true"}
    assert body["authorization"] == "[redacted]"  # sent, and redacted from what the model reads
    assert SECRET not in json.dumps(result)


async def test_http_path_arguments_cannot_be_dot_segments(server: LiveServer, ctx: ToolContext) -> None:
    tool = _http(server, "/orders/{order_id}")
    for bad in ("..", ".", ""):
        with pytest.raises(ToolError, match="order_id"):
            await tool.call("t", {"order_id": bad}, ctx)
    with pytest.raises(ToolError, match="order_id"):
        await tool.call("t", {"order_id": {"nested": 1}}, ctx)


async def test_http_missing_required_argument(server: LiveServer, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="missing required argument.*order_id"):
        await _http(server, "/orders/{order_id}").call("t", {}, ctx)


async def test_http_post_sends_other_arguments_as_json(server: LiveServer, ctx: ToolContext) -> None:
    tool = _http(server, "/orders/{order_id}/notes", method="post")
    result = await tool.call("t", {"order_id": "7", "text": "hi", "tags": ["a", "b"], "n": 2}, ctx)
    body = result["body"]
    assert (body["method"], body["path"]) == ("POST", "/orders/7/notes")
    assert body["body"] == {"text": "hi", "tags": ["a", "b"], "n": 2}
    assert body["content_type"] == "application/json"
    assert body["query"] == []


async def test_http_explicit_query_and_body_templates(server: LiveServer, ctx: ToolContext) -> None:
    tool = _http(
        server,
        "/search",
        method="PUT",
        query={"q": "{term}", "lang": "en", "page": "{page}"},
        body={"filter": {"ids": "{ids}", "label": "order {term}"}, "optional": "{absent}", "fixed": [1, "{page}"]},
    )
    result = await tool.call("t", {"term": "shoes", "ids": [1, 2], "page": 3, "ignored": "x"}, ctx)
    body = result["body"]
    assert dict(body["query"]) == {"q": "shoes", "lang": "en", "page": "3"}
    assert body["body"] == {"filter": {"ids": [1, 2], "label": "order shoes"}, "fixed": [1, 3]}
    assert "ignored" not in json.dumps(body)


async def test_http_text_result_and_size_cap(server: LiveServer, ctx: ToolContext) -> None:
    assert await _http(server, "/text").call("t", {}, ctx) == {"status": 200, "body": "plain text ✓"}
    result = await _http(server, "/big", max_response_bytes=1000).call("t", {}, ctx)
    assert result["truncated"] is True
    assert result["body"].startswith("y" * 1000) and "[truncated" in result["body"]
    assert len(result["body"]) < 1100
    capped_json = await _http(server, "/bigjson", max_response_bytes=5000).call("t", {}, ctx)
    assert capped_json["truncated"] is True and isinstance(capped_json["body"], str)


async def test_http_secrets_never_reach_results_or_errors(server: LiveServer, ctx: ToolContext) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": "other-key-0123456789"}
    reflected = await _http(server, "/reflect", headers=headers).call("t", {}, ctx)
    assert reflected["body"] == {"you_sent": "[redacted]", "token": "[redacted]", "key": "[redacted]"}
    with pytest.raises(ToolError) as caught:
        await _http(server, "/fail", headers=headers).call("t", {}, ctx)
    message = str(caught.value)
    assert "503" in message and "upstream down" in message
    assert SECRET not in message and str(server.port) not in message  # no URL either


async def test_http_non_2xx_is_a_tool_error_with_an_excerpt(server: LiveServer, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match=r"HTTP 404 Not Found: \{\"error\": \"no such order\"\}"):
        await _http(server, "/missing").call("t", {}, ctx)


async def test_http_timeout(server: LiveServer, ctx: ToolContext) -> None:
    # /slow does answer, after 1.5 s: an error proves the 0.3 s timeout cut the call short
    with pytest.raises(ToolError, match="did not answer"):
        await _http(server, "/slow", timeout=0.3).call("t", {}, ctx)


async def test_http_respects_the_call_deadline(server: LiveServer, ctx: ToolContext) -> None:
    late = ToolContext(workspace="acme", bot=None, request_id="r", deadline=time.monotonic() - 1, http=ctx.http)
    with pytest.raises(ToolError, match="no time left"):
        await _http(server, "/text").call("t", {}, late)


async def test_http_headers_stay_on_their_origin(server: LiveServer, ctx: ToolContext) -> None:
    headers = {"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET}
    same = await _http(server, "/samehost", headers=headers, method="POST").call("t", {"a": 1}, ctx)
    assert same["body"]["path"] == "/echo" and same["body"]["x_api_key"] == "[redacted]"
    assert same["body"]["method"] == "POST" and same["body"]["body"] == {"a": 1}  # 307 keeps both
    other = await _http(server, "/elsewhere", headers=headers).call("t", {}, ctx)
    assert other["body"]["path"] == "/echo"
    assert other["body"]["authorization"] is None and other["body"]["x_api_key"] is None


async def test_http_redirect_to_metadata_is_refused(server: LiveServer, ctx: ToolContext) -> None:
    with pytest.raises(EgressDenied, match="169.254.169.254"):
        await _http(server, "/metadata-redirect").call("t", {}, ctx)


async def test_http_goes_through_the_egress_guard(ctx: ToolContext) -> None:
    tool = _make(HttpTool, url="http://169.254.169.254/latest/meta-data/{path}")
    with pytest.raises(EgressDenied):
        await tool.call("t", {"path": "iam"}, ctx)


# ---------------------------------------------------------------- fetch_url


def test_html_to_text() -> None:
    title, text = html_to_text(PAGE)
    assert title == "Orders & Returns"
    assert text.splitlines() == [
        "# Returning an order",
        "You can return any item within 30 days.",
        "## Steps",
        "- Open your orders",
        "- Pick the item",
        "Fee | none",
        "line one",
        "  line two",
    ]
    for canary in ("SCRIPT", "NAV", "FOOTER", "HIDDEN", "NOSCRIPT", "color: red"):
        assert canary not in text


async def test_fetch_url_returns_readable_text(server: LiveServer, ctx: ToolContext) -> None:
    tool = _make(FetchUrlTool)
    (spec,) = tool.tools()
    assert spec.parameters["required"] == ["url"]
    result = await tool.call("t", {"url": f"{server.url}/page.html"}, ctx)
    assert result["title"] == "Orders & Returns"
    assert result["url"] == f"{server.url}/page.html"
    assert "# Returning an order" in result["text"] and "30 days" in result["text"]
    assert "CANARY" not in result["text"] and "truncated" not in result


async def test_fetch_url_charset_cap_and_types(server: LiveServer, ctx: ToolContext) -> None:
    latin = await _make(FetchUrlTool).call("t", {"url": f"{server.url}/latin1.html"}, ctx)
    assert (latin["title"], latin["text"]) == ("Café", "crème brûlée")
    short = await _make(FetchUrlTool, max_chars=20).call("t", {"url": f"{server.url}/page.html"}, ctx)
    assert short["truncated"] is True and short["text"].endswith("[truncated]")
    text = await _make(FetchUrlTool).call("t", {"url": f"{server.url}/text"}, ctx)
    assert text["text"] == "plain text ✓"
    with pytest.raises(ToolError, match="image/png"):
        await _make(FetchUrlTool).call("t", {"url": f"{server.url}/image.png"}, ctx)
    with pytest.raises(ToolError, match="HTTP 404"):
        await _make(FetchUrlTool).call("t", {"url": f"{server.url}/missing"}, ctx)


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "gopher://127.0.0.1/", "http://169.254.169.254/", "http://10.0.0.1/", ""]
)
async def test_fetch_url_refuses(url: str, ctx: ToolContext) -> None:
    with pytest.raises(ToolError):
        await _make(FetchUrlTool).call("t", {"url": url}, ctx)


async def test_fetch_url_redirect_to_metadata_is_refused(server: LiveServer, ctx: ToolContext) -> None:
    with pytest.raises(EgressDenied):
        await _make(FetchUrlTool).call("t", {"url": f"{server.url}/metadata-redirect"}, ctx)


async def test_fetch_url_timeout(server: LiveServer, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="did not load"):
        await _make(FetchUrlTool, timeout=0.3).call("t", {"url": f"{server.url}/slow"}, ctx)


# ---------------------------------------------------------------- calculator


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 % 3", 2),
        ("2 ** 10", 1024),
        ("-(3) + +4", 1),
        ("sqrt(16) + abs(-2)", 6.0),
        ("round(pi, 3)", 3.142),
        ("round(2.5)", 2),
        ("min(3, 1, 2) + max(4, 5)", 6),
        ("log(e)", 1.0),
        ("log(8, 2)", 3.0),
        ("sin(0) + cos(0)", 1.0),
        ("factorial(10)", 3628800),
        ("1e3 + 0.5", 1000.5),
        ("2 ** 0.5", 2**0.5),
        ("  12  ", 12),
    ],
)
def test_calculator_values(expression: str, expected: float) -> None:
    assert evaluate(expression) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("__import__('os').system('id')", "not allowed"),
        ("().__class__.__bases__[0].__subclasses__()", "not allowed"),
        ("open('/etc/passwd')", "function"),
        ("os.system", "not allowed"),
        ("x + 1", "unknown name"),
        ("'a' * 3", "only numbers"),
        ("True + 1", "only numbers"),
        ("[1, 2]", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("1 < 2", "not allowed"),
        ("2 ^ 3", r"use \*\*"),
        ("~1", "not allowed"),
        ("1j * 2", "only numbers"),
        ("9**9**9", "exponents"),
        ("10 ** 100000", "exponents"),
        ("2 ** 5000", "too large"),
        ("(2 ** 4000) * (2 ** 4000)", "too large"),
        ("factorial(100000)", "factorial"),
        ("factorial(1000)", "too large"),
        ("factorial(2.5)", "factorial"),
        ("10.0 ** 400", "too large"),
        ("exp(1000)", "too large"),
        ("1e309", "finite"),
        ("1 / 0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("sqrt(-1)", "math error"),
        ("(-8) ** (1/3)", "not a real number"),
        ("round(1.5, 10**6)", "round"),
        ("sqrt(1, 2)", "argument"),
        ("max(*[1])", "not allowed|positional"),
        ("round(x=1)", "positional"),
        ("1 +", "not a valid"),
        ("", "empty"),
        ("1" + "+1" * 300, "longer than"),
        ("(" * 240 + "1" + ")" * 240, "not a valid|nested|parts"),
        ("-" * 300 + "1", "parts"),
    ],
)
def test_calculator_refuses(expression: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        evaluate(expression)


async def test_calculator_tool(ctx: ToolContext) -> None:
    tool = _make(CalculatorTool)
    (spec,) = tool.tools()
    assert spec.parameters["required"] == ["expression"] and "sqrt" in spec.description
    assert await tool.call("t", {"expression": "(2 + 3) * 4"}, ctx) == {"result": 20}
    with pytest.raises(ToolError, match="expression"):
        await tool.call("t", {"expr": "1"}, ctx)
    with pytest.raises(ToolError, match="longer than 10"):
        await _make(CalculatorTool, max_length=10).call("t", {"expression": "1 + 1 + 1 + 1"}, ctx)


# ---------------------------------------------------------------- current_time


async def test_current_time_in_a_time_zone(ctx: ToolContext) -> None:
    tool = _make(CurrentTimeTool)
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = await tool.call("t", {"timezone": "Asia/Tokyo"}, ctx)
    after = dt.datetime.now(dt.UTC)
    moment = dt.datetime.fromisoformat(result["iso"])
    assert before <= moment <= after
    assert result["timezone"] == "Asia/Tokyo" and result["utc_offset"] == "+09:00"
    assert moment.utcoffset() == dt.timedelta(hours=9)
    local = moment.astimezone(ZoneInfo("Asia/Tokyo"))
    assert result["weekday"] == local.strftime("%A") and result["date"] == local.date().isoformat()
    assert result["unix"] == int(moment.timestamp())


async def test_current_time_default_and_configured_zones(ctx: ToolContext) -> None:
    utc = await _make(CurrentTimeTool).call("t", {}, ctx)
    assert (utc["timezone"], utc["utc_offset"]) == ("UTC", "+00:00")
    paris = await _make(CurrentTimeTool, timezone="Europe/Paris").call("t", {}, ctx)
    assert paris["timezone"] == "Europe/Paris" and paris["utc_offset"] in ("+01:00", "+02:00")


@pytest.mark.parametrize("bad", ["Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", "x" * 200, 42])
async def test_current_time_bad_time_zone(bad: Any, ctx: ToolContext) -> None:
    with pytest.raises(ToolError, match="time ?zone"):
        await _make(CurrentTimeTool).call("t", {"timezone": bad}, ctx)


def test_egress_client_errors_are_not_httpx_errors() -> None:
    """Tools rely on this: EgressDenied passes through their ``except httpx.HTTPError``."""
    assert not issubclass(EgressDenied, httpx.HTTPError)
