"""Turn uploaded files into structured text (:class:`~chorus.knowledge.model.ParsedDocument`).

:func:`parse` is the only entry point. It detects the format (extension first, then the content
type, then a light sniff of the bytes), decodes text, and returns sections that carry their heading
path and kind. Every section's text is stripped and non-empty. A file that cannot be turned into
text raises :class:`ParseError` with a reason meant for the person who uploaded it.

Formats: plain text, Markdown, HTML (main text only), PDF (``pypdf``), JSON, JSON Lines, CSV, TSV.
"""

from __future__ import annotations

from collections.abc import Callable

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.detect import detect_format
from chorus.runtime.knowledge.parsing.errors import ParseError
from chorus.runtime.knowledge.parsing.html import _parse_html
from chorus.runtime.knowledge.parsing.markdown import _parse_markdown
from chorus.runtime.knowledge.parsing.pdf import _parse_pdf
from chorus.runtime.knowledge.parsing.records import (
    _parse_delimited,
    _parse_json,
    _parse_json_lines,
)
from chorus.runtime.knowledge.parsing.text import _parse_text

__all__ = ["FORMATS", "ParseError", "detect_format", "parse"]


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
