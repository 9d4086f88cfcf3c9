"""The HTML parser: a page's main text, with chrome (scripts, navigation, forms...) dropped."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.errors import ParseError, _describe
from chorus.runtime.knowledge.parsing.text import _decode

_DROP_TAGS = frozenset({
    "script", "style", "nav", "header", "footer", "aside", "form", "noscript", "template",
    "svg", "math", "iframe", "object", "canvas", "button", "select", "textarea", "dialog",
})
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "dialog"})
_VOID_TAGS = frozenset({
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr",
})
_BLOCK_TAGS = frozenset({
    "address", "article", "blockquote", "body", "dd", "details", "dialog", "div", "dl", "dt",
    "fieldset", "figcaption", "figure", "hr", "html", "li", "main", "ol", "p", "section",
    "summary", "ul", "caption",
})
_HEADING_TAGS = {f"h{n}": n for n in range(1, 7)}
_WHITESPACE = re.compile(r"\s+")

# An event: ("heading", level, text, region) or ("block", kind, text, region) where kind is
# "p", "li", "pre" or "table" and region is 2 inside <main>, 1 inside <article>, else 0.
_Event = tuple[str, Any, str, int]


class _Region:
    """Tracks whether the parser is inside an element (counting nested same-name tags)."""

    def __init__(self) -> None:
        self.tag = ""
        self.depth = 0

    def start(self, tag: str, enters: bool) -> None:
        if self.depth and tag == self.tag:
            self.depth += 1
        elif not self.depth and enters:
            self.tag, self.depth = tag, 1

    def end(self, tag: str) -> None:
        if self.depth and tag == self.tag:
            self.depth -= 1

    def __bool__(self) -> bool:
        return self.depth > 0


class _HTMLExtractor(HTMLParser):
    """Collects headings and text blocks, skipping chrome (scripts, navigation, forms...)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.events: list[_Event] = []
        self.title = ""
        self.url = ""
        self.og_url = ""
        self.metadata: dict[str, Any] = {}
        self._skip = _Region()
        self._main = _Region()
        self._article = _Region()
        self._buffer: list[str] = []
        self._title: list[str] | None = None
        self._heading: tuple[int, list[str]] | None = None
        self._pre = 0
        self._table = 0
        self._rows: list[str] = []
        self._cells: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_li = False

    # -- helpers
    def _region(self) -> int:
        return 2 if self._main else 1 if self._article else 0

    def _sink(self) -> list[str]:
        if self._heading is not None:
            return self._heading[1]
        if self._cell is not None:
            return self._cell
        return self._buffer

    def _flush(self) -> None:
        if self._pre:
            return  # a block tag inside <pre>: its text stays in the code block
        raw, self._buffer = "".join(self._buffer), []
        text = _inline(raw)
        if text:
            self.events.append(("block", "li" if self._in_li else "p", text, self._region()))

    def _end_cell(self) -> None:
        if self._cell is not None and self._cells is not None:
            self._cells.append(_inline("".join(self._cell)).replace("\n", " "))
        self._cell = None

    def _end_row(self) -> None:
        self._end_cell()
        if self._cells and any(self._cells):
            self._rows.append(" | ".join(self._cells))
        self._cells = None

    # -- HTMLParser callbacks
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip and tag == self._skip.tag == "p" and self._skip.depth == 1:
            self._skip.end("p")  # <p> cannot nest: a new one closes the skipped one
        if self._skip:
            self._skip.start(tag, False)
            return
        attr = {k: (v or "") for k, v in attrs}
        if tag not in _VOID_TAGS and (
            (tag in _DROP_TAGS and not (tag == "header" and (self._main or self._article)))
            or "hidden" in attr
            or attr.get("aria-hidden", "").lower() == "true"
            or attr.get("role", "").lower() in _DROP_ROLES
        ):
            self._skip.start(tag, True)
            return
        self._main.start(tag, tag == "main" or attr.get("role", "").lower() == "main")
        self._article.start(tag, tag == "article")
        if tag == "title":
            self._title = []
        elif tag == "meta":
            self._meta(attr)
        elif tag == "link" and "canonical" in attr.get("rel", "").lower().split():
            self.url = self.url or attr.get("href", "").strip()
        elif tag == "html" and attr.get("lang"):
            self.metadata.setdefault("language", attr["lang"].strip())
        elif tag in _HEADING_TAGS and not self._table:
            self._flush()
            self._heading = (_HEADING_TAGS[tag], [])
        elif tag == "br":
            self._sink().append("\n")
        elif tag == "pre":
            if not self._pre:
                self._flush()
            self._pre += 1
        elif tag == "table":
            if not self._table:
                self._flush()
                self._rows = []
            else:
                self._sink().append(" ")
            self._table += 1
        elif self._table == 1 and tag == "tr":
            self._end_row()
            self._cells = []
        elif self._table == 1 and tag in ("td", "th"):
            self._end_cell()
            if self._cells is None:
                self._cells = []
            self._cell = []
        elif self._table:
            self._sink().append(" ")
        elif tag == "li":
            self._flush()
            self._in_li = True
        elif tag in _BLOCK_TAGS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            self._skip.end(tag)
            return
        if tag == "title" and self._title is not None:
            self.title = self.title or _inline("".join(self._title)).replace("\n", " ")
            self._title = None
        elif tag in _HEADING_TAGS and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            text = _inline("".join(parts)).replace("\n", " ")
            if text:
                self.events.append(("heading", level, text, self._region()))
        elif tag == "pre" and self._pre:
            self._pre -= 1
            if not self._pre:
                code = "".join(self._buffer).strip("\n").rstrip()
                self._buffer = []
                if code.strip():
                    self.events.append(("block", "pre", code, self._region()))
        elif tag == "table" and self._table:
            self._table -= 1
            if not self._table:
                self._end_row()
                if self._rows:
                    self.events.append(("block", "table", "\n".join(self._rows), self._region()))
                self._rows = []
                self._flush()  # a caption or stray text inside the table
        elif self._table == 1 and tag == "tr":
            self._end_row()
        elif self._table == 1 and tag in ("td", "th"):
            self._end_cell()
        elif self._table:
            self._sink().append(" ")
        elif tag in ("li", "ul", "ol"):
            self._flush()
            self._in_li = False
        elif tag in _BLOCK_TAGS:
            self._flush()
        self._main.end(tag)
        self._article.end(tag)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        if self._title is not None:
            self._title.append(data)
        elif self._pre:
            self._buffer.append(data)
        else:
            self._sink().append(_WHITESPACE.sub(" ", data))

    def _meta(self, attr: dict[str, str]) -> None:
        key = (attr.get("property") or attr.get("name") or "").strip().lower()
        content = attr.get("content", "").strip()
        if not content:
            return
        if key == "og:url":
            self.og_url = self.og_url or content
        elif key in ("description", "author", "keywords"):
            self.metadata.setdefault(key, content)

    def close(self) -> None:
        super().close()
        self._flush()


def _inline(raw: str) -> str:
    """Collapse whitespace within lines; keep the line breaks that ``<br>`` put there."""
    lines = (" ".join(part.split()) for part in raw.split("\n"))
    return "\n".join(line for line in lines if line)


_MARKED_SECTION = re.compile(r"<!\[(?!CDATA\[)")


def _extract_html(source: str) -> _HTMLExtractor:
    extractor = _HTMLExtractor()
    extractor.feed(source)
    extractor.close()
    return extractor


def _parse_html(data: bytes) -> ParsedDocument:
    """Main text of a page: chrome dropped, ``<main>`` (else ``<article>``) preferred.

    Headings h1-h6 build the heading path; list items of one list become one section (``- item``
    lines); table rows become ``cell | cell`` lines in a ``table`` section; ``<pre>`` is ``code``.
    A ``<header>`` inside ``<main>``/``<article>`` is kept (it usually holds the article's title).
    """
    source = _decode(data, declared=True)
    try:
        extractor = _extract_html(source)
    except AssertionError:  # html.parser gives up on malformed "<![" marked sections
        try:
            extractor = _extract_html(_MARKED_SECTION.sub("&lt;![", source))
        except AssertionError as exc:
            raise ParseError(f"malformed HTML: {_describe(exc)}") from None
    events = extractor.events
    for region in (2, 1):
        if any(kind == "block" and where >= region for kind, _, _, where in events):
            events = [event for event in events if event[3] >= region]
            break
    sections: list[Section] = []
    path: list[tuple[int, str]] = []
    first_h1 = ""
    list_items: list[str] = []

    def flush_list() -> None:
        if list_items:
            text = "\n".join(f"- {item}" for item in list_items)
            sections.append(Section(headings=[t for _, t in path], text=text))
            list_items.clear()

    for kind, value, text, _ in events:
        if kind == "heading":
            flush_list()
            while path and path[-1][0] >= value:
                path.pop()
            path.append((value, text))
            if value == 1 and not first_h1:
                first_h1 = text
        elif value == "li":
            list_items.append(text)
        else:
            flush_list()
            section_kind = {"pre": "code", "table": "table"}.get(value, "text")
            sections.append(Section(headings=[t for _, t in path], text=text, kind=section_kind))
    flush_list()
    return ParsedDocument(
        title=extractor.title or first_h1,
        url=extractor.url or extractor.og_url,
        sections=sections,
        metadata=extractor.metadata,
    )
