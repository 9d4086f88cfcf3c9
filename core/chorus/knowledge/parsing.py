"""Turn uploaded files into structured text (:class:`~chorus.knowledge.model.ParsedDocument`).

:func:`parse` is the only entry point. It detects the format (extension first, then the content
type, then a light sniff of the bytes), decodes text, and returns sections that carry their heading
path and kind. Every section's text is stripped and non-empty. A file that cannot be turned into
text raises :class:`ParseError` with a reason meant for the person who uploaded it.

Formats: plain text, Markdown, HTML (main text only), PDF (``pypdf``), JSON, JSON Lines, CSV, TSV.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any

from chorus.knowledge.model import ParsedDocument, Section

__all__ = ["FORMATS", "ParseError", "detect_format", "parse"]


class ParseError(ValueError):
    """A file cannot be turned into text; ``reason`` (also ``str(error)``) says why, for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- format detection

_EXTENSIONS = {
    ".txt": "text", ".text": "text", ".log": "text",
    ".md": "markdown", ".markdown": "markdown", ".mdown": "markdown", ".mkd": "markdown",
    ".html": "html", ".htm": "html", ".xhtml": "html",
    ".pdf": "pdf",
    ".json": "json",
    ".jsonl": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv", ".tab": "tsv",
}

_CONTENT_TYPES = {
    "text/plain": "text",
    "text/markdown": "markdown", "text/x-markdown": "markdown",
    "text/html": "html", "application/xhtml+xml": "html",
    "application/pdf": "pdf", "application/x-pdf": "pdf",
    "application/json": "json", "text/json": "json",
    "application/x-ndjson": "jsonl", "application/ndjson": "jsonl", "application/jsonl": "jsonl",
    "application/x-jsonlines": "jsonl", "application/jsonlines": "jsonl",
    "text/csv": "csv", "application/csv": "csv",
    "text/tab-separated-values": "tsv",
}

# Content types that say nothing about the format: fall through to sniffing.
_UNINFORMATIVE_TYPES = {"", "application/octet-stream", "binary/octet-stream", "application/unknown"}


def detect_format(data: bytes, filename: str, content_type: str | None = None) -> str:
    """The format name :func:`parse` would use, or raise :class:`ParseError` for unsupported files.

    Order: a known extension wins; then a known (or any ``text/*``) content type; then the bytes:
    ``%PDF-`` is a PDF, an HTML doctype/``<html`` is HTML, valid JSON is JSON, other text is plain
    text. Binary content with an unknown extension or type is unsupported.
    """
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    if mime in _CONTENT_TYPES:
        return _CONTENT_TYPES[mime]
    if mime.endswith("+json"):
        return "json"
    if data[:1024].lstrip()[:5] == b"%PDF-":
        return "pdf"
    if mime.startswith("text/"):
        return "text"
    if mime not in _UNINFORMATIVE_TYPES:
        raise ParseError(f"unsupported file type '{mime}'" + (f" ({suffix})" if suffix else ""))
    if _looks_binary(data) and not data.startswith(_UTF16_BOMS):
        raise ParseError("unsupported file type" + (f" '{suffix}'" if suffix else "") + ": binary content")
    head = data[:1024].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return "html"
    if head[:1] in (b"{", b"["):
        try:
            json.loads(_decode(data))
        except (ValueError, ParseError):
            pass
        else:
            return "json"
    return "text"


def parse(data: bytes, filename: str, content_type: str | None = None) -> ParsedDocument:
    """Parse ``data`` (named ``filename``, optionally typed ``content_type``) into sections.

    ``metadata["format"]`` names the format used; ``title``/``url`` are ``""`` when the document
    declares none (callers fall back to the file name). Raises :class:`ParseError` for unsupported
    types, corrupt or encrypted PDFs, undecodable or binary "text", invalid JSON/CSV, and files
    with no text at all; bad input raises nothing else.
    """
    if not data.strip():
        raise ParseError("empty file")
    fmt = detect_format(data, filename, content_type)
    try:
        doc = _PARSERS[fmt](data)
    except RecursionError:
        raise ParseError(f"{fmt} structure is nested too deeply") from None
    sections = [
        Section(headings=s.headings, text=s.text.strip(), kind=s.kind) for s in doc.sections if s.text.strip()
    ]
    if not sections:
        raise ParseError("no text content found")
    return ParsedDocument(
        title=doc.title, url=doc.url, sections=sections, metadata={"format": fmt, **doc.metadata}
    )


# --------------------------------------------------------------------------- text decoding

_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 12, 13, 27))  # allow \t \n \f \r ESC
_NOT_CONTROL = bytes(b for b in range(256) if b not in _CONTROL)
_CHARSET = re.compile(rb"""charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""")


def _looks_binary(data: bytes) -> bool:
    """NUL bytes or more than 2% control bytes in the first 8 KiB."""
    sample = data[:8192]
    if b"\x00" in sample:
        return True
    return len(sample.translate(None, _NOT_CONTROL)) > len(sample) * 0.02


def _decode(data: bytes, *, declared: bool = False) -> str:
    """Bytes to text with ``\\n`` line ends: UTF-8 (BOM optional) or UTF-16 with a BOM.

    Non-UTF-8 text falls back to a charset the document declares (``declared``, for HTML), then to
    Windows-1252 (which also covers Latin-1 text). Binary data raises :class:`ParseError`.
    """
    if data.startswith(_UTF16_BOMS):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise ParseError(f"not valid UTF-16 text (bad bytes at offset {exc.start})") from None
    elif _looks_binary(data):
        raise ParseError("binary data, not text")
    else:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            text = _decode_legacy(data, declared) or ""
            if not text:
                raise ParseError(f"not valid UTF-8 text (bad bytes at offset {exc.start})") from None
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")


def _decode_legacy(data: bytes, declared: bool) -> str | None:
    encodings = []
    if declared and (match := _CHARSET.search(data[:4096])):
        encodings.append(match.group(1).decode("ascii"))
    encodings.append("cp1252")
    for encoding in encodings:
        try:
            return data.decode(encoding)
        except (LookupError, UnicodeDecodeError):
            continue
    return None


# --------------------------------------------------------------------------- plain text

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n\s*")
_TITLE_MAX = 100


def _parse_text(data: bytes) -> ParsedDocument:
    """Paragraphs (separated by blank lines) become sections; a short first line is the title."""
    text = _decode(data)
    paragraphs = [p.strip() for p in _BLANK_LINES.split(text)]
    sections = [Section(text=p) for p in paragraphs if p]
    title = ""
    if sections:
        first = sections[0].text.split("\n", 1)[0].strip()
        title = first if len(first) <= _TITLE_MAX else ""
    return ParsedDocument(title=title, sections=sections)


# --------------------------------------------------------------------------- Markdown

_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$")
_THEMATIC = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_DELIMITER = re.compile(r"^[ \t]*\|?[ \t]*:?-+:?[ \t]*(?:\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_FRONT_MATTER_END = re.compile(r"^(?:---|\.\.\.)[ \t]*$", re.MULTILINE)
_YAML_LINE = re.compile(r"^(?:\s*(?:#.*)?|[\w.-]+[ \t]*:(?:[ \t].*)?|[ \t]+\S.*|-(?:[ \t].*)?)$")
_YAML_QUOTED = re.compile(r"""^(?:"((?:[^"\\]|\\.)*)"|'((?:[^']|'')*)')[ \t]*(?:#.*)?$""")
_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?$")


class _MarkdownBuilder:
    """Line-by-line CommonMark-ish block parser; see :func:`_parse_markdown`."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.path: list[tuple[int, str]] = []
        self.first_h1 = ""
        self.para: list[str] = []
        self.table: list[str] = []
        self.fence: list[str] = []
        self.fence_marker = ""

    def headings(self) -> list[str]:
        return [text for _, text in self.path]

    def emit(self, text: str, kind: str) -> None:
        if kind == "text":
            text = _HTML_COMMENT.sub("", text)
        text = text.strip("\n") if kind == "code" else text.strip()
        if text.strip():
            self.sections.append(Section(headings=self.headings(), text=text, kind=kind))

    def flush(self) -> None:
        if self.para:
            self.emit("\n".join(self.para), "text")
            self.para = []
        if self.table:
            self.emit("\n".join(self.table), "table")
            self.table = []

    def heading(self, level: int, raw: str) -> None:
        text = _MD_LINK.sub(r"\1", raw).replace("`", "").strip()
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        if level == 1 and not self.first_h1:
            self.first_h1 = text

    def line(self, line: str) -> None:
        if self.fence_marker:
            self.fence.append(line)
            stripped = line.strip()
            marker = self.fence_marker
            if stripped.startswith(marker) and stripped == marker[0] * len(stripped):
                self.emit("\n".join(self.fence), "code")
                self.fence, self.fence_marker = [], ""
            return
        if self.table:
            if line.strip() and "|" in line:
                self.table.append(line)
                return
            self.flush()
        if not line.strip():
            self.flush()
            return
        if fence := _FENCE.match(line):
            if not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
                self.flush()
                self.fence_marker, self.fence = fence.group(1), [line]
                return
        if atx := _ATX.match(line):
            self.flush()
            self.heading(len(atx.group(1)), atx.group(2) or "")
            return
        if self.para and (setext := _SETEXT.match(line)):
            text = " ".join(part.strip() for part in self.para)
            self.para = []
            self.heading(1 if setext.group(1)[0] == "=" else 2, text)
            return
        if _THEMATIC.match(line):
            self.flush()
            return
        if self.para and "|" in self.para[-1] and "|" in line and _TABLE_DELIMITER.match(line):
            header = self.para.pop()
            self.flush()
            self.table = [header, line]
            return
        self.para.append(line)

    def finish(self) -> None:
        if self.fence_marker:  # an unclosed fence runs to the end of the document
            self.emit("\n".join(self.fence), "code")
            self.fence, self.fence_marker = [], ""
        self.flush()


def _front_matter(text: str) -> tuple[dict[str, Any], str]:
    """Split leading YAML front matter into top-level scalar keys and the remaining text."""
    if not text.startswith("---\n"):
        return {}, text
    end = _FRONT_MATTER_END.search(text, 4)
    if end is None:
        return {}, text
    lines = text[4:end.start()].split("\n")
    if not all(_YAML_LINE.match(line) for line in lines):
        return {}, text  # two thematic breaks around ordinary text, not front matter
    values: dict[str, Any] = {}
    for line in lines:
        key, sep, raw = line.partition(":")
        if not sep or not key or key[0] in " \t#-" or not re.fullmatch(r"[\w.-]+", key.strip()):
            continue
        value = _yaml_scalar(raw.strip())
        if value is not None:
            values[key.strip()] = value
    return values, text[end.end():]


def _yaml_scalar(raw: str) -> Any:
    """A YAML plain or quoted scalar; ``None`` for empty, null and non-scalar (collection) values."""
    if quoted := _YAML_QUOTED.match(raw):
        double, single = quoted.groups()
        return single.replace("''", "'") if double is None else double.replace('\\"', '"')
    raw = re.split(r"\s+#", raw, maxsplit=1)[0].strip()
    if not raw or raw[0] in "[{|>&*!" or raw in ("~", "null", "Null", "NULL"):
        return None
    if raw in ("true", "True", "TRUE"):
        return True
    if raw in ("false", "False", "FALSE"):
        return False
    if _NUMBER.match(raw):
        return float(raw) if any(c in raw for c in ".eE") else int(raw)
    return raw


def _parse_markdown(data: bytes) -> ParsedDocument:
    """ATX/setext headings build the heading path; fenced code and pipe tables are kept whole.

    YAML front matter: ``title`` and ``url``/``source_url``/``canonical`` set title and url; other
    scalar keys go to metadata. The title defaults to the first H1.
    """
    matter, body = _front_matter(_decode(data))
    builder = _MarkdownBuilder()
    for line in body.split("\n"):
        builder.line(line)
    builder.finish()
    title = str(matter.pop("title", "") or "").strip() or builder.first_h1
    url = ""
    for key in ("url", "source_url", "canonical"):
        value = matter.pop(key, None)
        if value and not url:
            url = str(value).strip()
    return ParsedDocument(title=title, url=url, sections=builder.sections, metadata=matter)


# --------------------------------------------------------------------------- HTML

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
            tag in _DROP_TAGS and not (tag == "header" and (self._main or self._article))
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


# --------------------------------------------------------------------------- PDF


def _parse_pdf(data: bytes) -> ParsedDocument:
    """One section per page with text, headed ``["Page N"]``; title from the PDF metadata.

    Encrypted PDFs open only when the user password is empty. Pages whose text cannot be
    extracted are skipped and listed in ``metadata["unreadable_pages"]``; a PDF with no text at
    all (e.g. scanned images) raises :class:`ParseError`.
    """
    from pypdf import PdfReader  # imported lazily: only PDFs pay for it

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            try:
                opened = reader.decrypt("")
            except Exception:  # noqa: BLE001 - e.g. AES without the optional crypto library
                opened = 0
            if not opened:
                raise ParseError("encrypted PDF: a password is required")
        pages = list(reader.pages)
    except ParseError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types on malformed input
        raise ParseError(f"corrupt or invalid PDF: {_describe(exc)}") from None
    title = ""
    metadata: dict[str, Any] = {"pages": len(pages)}
    try:
        info = reader.metadata
        if info is not None:
            title = str(info.title or "").strip()
            if info.author:
                metadata["author"] = str(info.author).strip()
    except Exception:  # noqa: BLE001 - a damaged info dictionary is not worth failing for
        pass
    sections: list[Section] = []
    unreadable: list[int] = []
    for number, page in enumerate(pages, start=1):
        try:
            raw = page.extract_text() or ""
        except Exception:  # noqa: BLE001
            unreadable.append(number)
            continue
        text = _clean_pdf_text(raw)
        if text:
            sections.append(Section(headings=[f"Page {number}"], text=text))
    if unreadable:
        metadata["unreadable_pages"] = unreadable
    if not sections:
        if unreadable and len(unreadable) == len(pages):
            raise ParseError("corrupt PDF: no page could be read")
        raise ParseError("PDF has no extractable text (scanned pages need OCR)")
    return ParsedDocument(title=title, sections=sections, metadata=metadata)


def _clean_pdf_text(raw: str) -> str:
    lines = [line.rstrip() for line in raw.replace("\r\n", "\n").replace("\x00", "").split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _describe(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message if len(message) <= 200 else message[:197] + "..."


# --------------------------------------------------------------------------- JSON, JSON Lines


def _value_text(value: Any) -> str:
    """Strings as they are, scalars as JSON literals, nested values as one-line JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


def _record_text(record: Any) -> str:
    """``key: value`` lines for an object (null and empty-string fields left out); else the value."""
    if isinstance(record, dict):
        lines = (
            f"{key}: {_value_text(value)}"
            for key, value in record.items()
            if value is not None and value != ""
        )
        return "\n".join(lines).strip()
    return _value_text(record).strip()


def _records_document(records: list[Any]) -> ParsedDocument:
    sections = [Section(text=text, kind="row") for text in map(_record_text, records) if text]
    return ParsedDocument(sections=sections, metadata={"records": len(records)})


def _parse_json(data: bytes) -> ParsedDocument:
    """An array: one ``row`` section per element; an object or scalar: one ``key: value`` section.

    A ``.json`` file that is really JSON Lines (one value per line) is read as JSON Lines.
    """
    text = _decode(data)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":
            try:
                return _parse_json_lines(data)
            except ParseError:
                pass
        raise ParseError(f"invalid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if isinstance(value, list):
        if not value:
            raise ParseError("JSON array is empty")
        return _records_document(value)
    return ParsedDocument(sections=[Section(text=_record_text(value))])


def _parse_json_lines(data: bytes) -> ParsedDocument:
    """One ``row`` section per non-blank line, each a JSON value."""
    records = []
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ParseError(f"invalid JSON on line {number}: {exc.msg} at column {exc.colno}") from None
    if not records:
        raise ParseError("no JSON records")
    return _records_document(records)


# --------------------------------------------------------------------------- CSV, TSV

_DELIMITERS = ",;\t|"


def _sniff_delimiter(text: str) -> str:
    """The delimiter of a CSV: ``csv.Sniffer`` on the first lines, else the most frequent candidate
    in the header line, else a comma."""
    sample = text[:65536]
    if len(text) > len(sample) and "\n" in sample:
        sample = sample[: sample.rindex("\n")]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = ""
    if delimiter in _DELIMITERS and delimiter:
        return delimiter
    header = sample.split("\n", 1)[0]
    counts = {d: header.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: (counts[d], -_DELIMITERS.index(d)))
    return best if counts[best] else ","


def _parse_delimited(data: bytes, delimiter: str | None) -> ParsedDocument:
    """The first non-blank row is the header; each later row is a ``row`` section of
    ``name: value`` lines (empty cells left out). Extra cells are named ``column_N``."""
    text = _decode(data)
    if delimiter is None:
        delimiter = _sniff_delimiter(text)
    try:
        rows = [row for row in csv.reader(io.StringIO(text), delimiter=delimiter) if any(c.strip() for c in row)]
    except csv.Error as exc:
        raise ParseError(f"invalid CSV: {exc}") from None
    if not rows:
        raise ParseError("CSV has no rows")
    header = [name.strip() or f"column_{i}" for i, name in enumerate(rows[0], start=1)]
    if len(rows) == 1:
        raise ParseError("CSV has a header row but no data rows")
    sections = []
    for row in rows[1:]:
        lines = []
        for i, cell in enumerate(row):
            value = cell.strip()
            if value:
                name = header[i] if i < len(header) else f"column_{i + 1}"
                lines.append(f"{name}: {value}")
        if lines:
            sections.append(Section(text="\n".join(lines), kind="row"))
    return ParsedDocument(sections=sections, metadata={"records": len(rows) - 1, "columns": header})


_PARSERS: dict[str, Callable[[bytes], ParsedDocument]] = {
    "text": _parse_text,
    "markdown": _parse_markdown,
    "html": _parse_html,
    "pdf": _parse_pdf,
    "json": _parse_json,
    "jsonl": _parse_json_lines,
    "csv": lambda data: _parse_delimited(data, None),
    "tsv": lambda data: _parse_delimited(data, "\t"),
}

FORMATS: tuple[str, ...] = tuple(_PARSERS)
