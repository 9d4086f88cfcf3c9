"""Built-in tool ``fetch_url``: the readable text of a web page.

Arguments ``{"url": "https://..."}``. The page is fetched with ``GET`` through the skillset's
egress-guarded client (every redirect hop is checked), at most ``max_response_bytes`` of it are
read, and HTML is reduced to its text with the standard library's parser: scripts, styles,
navigation, headers, footers, forms and other chrome are dropped; headings (as ``#`` lines),
paragraphs, list items and table cells are kept. Plain text and JSON are returned as they are.
The result is ``{"url", "title", "text"}`` with ``text`` capped at ``max_chars`` (then
``"truncated": true``); other content types and non-2xx answers are a
:class:`~chorus.tools.ToolError`.
"""

from __future__ import annotations

import asyncio
import re
import time
from html.parser import HTMLParser
from typing import Any

import httpx

from chorus import __version__
from chorus.egress import read_capped
from chorus.tools import ToolContext, ToolDriver, ToolError, ToolSettings, ToolSpec

_TEXT_TYPES = ("text/plain", "text/markdown", "application/json", "text/csv")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)
_SKIP = frozenset({
    "script", "style", "noscript", "template", "svg", "math", "canvas", "iframe", "object", "nav",
    "header", "footer", "aside", "form", "button", "select", "textarea", "dialog",
})
_VOID = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr",
})
_BLOCK = frozenset({
    "p", "div", "section", "article", "main", "blockquote", "pre", "ul", "ol", "dl", "dt", "dd", "table",
    "tr", "figure", "figcaption", "address", "details", "summary", "body", "html", "hr", "br",
})
_HEADINGS = {f"h{i}": i for i in range(1, 7)}


class FetchUrlSettings(ToolSettings):
    """``driver = "fetch_url"`` keys."""

    max_chars: int = 20_000
    max_response_bytes: int = 2 * 1024 * 1024
    timeout: float = 20.0

    def __post_init__(self) -> None:
        if self.max_chars < 1 or self.max_response_bytes < 1 or self.timeout <= 0:
            raise ValueError("max_chars, max_response_bytes and timeout must be positive")


class FetchUrlTool(ToolDriver):
    """Fetch a public web page and return its title and readable text."""

    settings_type = FetchUrlSettings
    settings: FetchUrlSettings

    def tools(self) -> list[ToolSpec]:
        s = self.settings
        return [
            ToolSpec(
                name=s.name,
                description=s.description or "Fetch a web page and return its title and readable text.",
                parameters={
                    "type": "object",
                    "properties": {"url": {"type": "string", "description": "The http(s) URL of the page"}},
                    "required": ["url"],
                },
            )
        ]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> Any:
        """Fetch ``arguments["url"]``; return ``{"url", "title", "text"[, "truncated"]}``."""
        url = arguments.get("url") if isinstance(arguments, dict) else None
        if not isinstance(url, str) or not url.strip():
            raise ToolError('arguments must be {"url": "<http(s) URL>"}')
        url = url.strip()
        if not url.lower().startswith(("http://", "https://")):
            raise ToolError("only http:// and https:// URLs can be fetched")
        budget = min(self.settings.timeout, ctx.deadline - time.monotonic())
        if budget <= 0:
            raise ToolError("no time left to fetch the page")
        headers = {
            "accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
            "user-agent": f"Chorus/{__version__} (fetch_url)",
        }
        try:
            async with asyncio.timeout(budget):
                request = ctx.http.build_request("GET", url, headers=headers, timeout=budget)
                response = await ctx.http.send(request, stream=True, follow_redirects=True)
                data, truncated = await read_capped(response, self.settings.max_response_bytes)
        except (TimeoutError, httpx.TimeoutException):
            raise ToolError(f"the page did not load within {budget:.3g} s") from None
        except httpx.InvalidURL:
            raise ToolError("not a valid URL") from None
        except httpx.TooManyRedirects:
            raise ToolError("the page redirected too many times") from None
        except httpx.HTTPError as exc:
            raise ToolError(f"the page could not be fetched ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise ToolError(f"the server answered HTTP {response.status_code} {response.reason_phrase}".rstrip())
        return self._result(response, data, truncated)

    def _result(self, response: httpx.Response, data: bytes, truncated: bool) -> dict[str, Any]:
        media = response.headers.get("content-type", "text/html").split(";")[0].strip().lower()
        charset = response.charset_encoding
        if media in _HTML_TYPES or not media:
            if charset is None:
                found = _META_CHARSET.search(data[:4096])
                charset = found.group(1).decode("ascii") if found else None
            title, text = html_to_text(_decode(data, charset))
        elif media in _TEXT_TYPES or media.startswith("text/") or media.endswith("+json"):
            title, text = "", _decode(data, charset).strip()
        else:
            raise ToolError(f"cannot read content of type {media!r} (only HTML and text)")
        result: dict[str, Any] = {"url": str(response.url), "title": title, "text": text}
        if len(text) > self.settings.max_chars:
            result["text"] = text[: self.settings.max_chars] + "\n[truncated]"
            truncated = True
        if truncated:
            result["truncated"] = True
        return result


def html_to_text(html: str) -> tuple[str, str]:
    """``(title, text)`` of an HTML document: readable blocks, chrome and scripts removed."""
    parser = _Readable()
    parser.feed(html)
    parser.close()
    return parser.title(), parser.text()


class _Readable(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._skip: list[str] = []  # open elements whose content is dropped
        self._in_title = False
        self._in_pre = 0
        self._title: list[str] = []
        self._lines: list[str] = []
        self._line: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            if tag in ("br", "hr") and not self._skip:
                self._flush()
            return
        hidden = any(k == "hidden" or (k == "aria-hidden" and v == "true") for k, v in attrs)
        if tag == "title" and not self._skip and not self._title:
            self._in_title = True
        elif self._skip or tag in _SKIP or hidden or tag == "title":
            self._skip.append(tag)
        elif tag in _HEADINGS:
            self._flush()
            self._line.append("#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._flush()
            self._line.append("- ")
        elif tag in ("td", "th"):
            self._line.append(" | " if self._line else "")
        elif tag == "pre":
            self._flush()
            self._in_pre += 1
        elif tag in _BLOCK:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if tag in self._skip:
                while self._skip and self._skip.pop() != tag:
                    pass
            return
        if tag == "title":
            self._in_title = False
        elif tag == "pre":
            self._flush(keep=True)
            self._in_pre = max(0, self._in_pre - 1)
        elif tag in _HEADINGS or tag in _BLOCK or tag == "li":
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self._title.append(data)
        elif not self._skip:
            if self._in_pre:
                for i, part in enumerate(data.split("\n")):
                    if i:
                        self._flush(keep=True)
                    self._line.append(part)
            else:
                self._line.append(data)

    def _flush(self, *, keep: bool = False) -> None:
        raw = "".join(self._line)
        self._line = []
        line = raw.rstrip() if keep else " ".join(raw.split())
        if line.strip("#- |"):
            self._lines.append(line)

    def title(self) -> str:
        return " ".join("".join(self._title).split())

    def text(self) -> str:
        self._flush()
        return "\n".join(self._lines)


def _decode(data: bytes, charset: str | None) -> str:
    try:
        return data.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")
