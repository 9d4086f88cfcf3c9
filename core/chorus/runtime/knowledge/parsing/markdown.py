"""The Markdown parser: heading paths, fenced code, pipe tables and YAML front matter."""

from __future__ import annotations

import re
from typing import Any

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.text import _decode

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
        if (fence := _FENCE.match(line)) and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):
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
