"""Format detection: extension, then content type, then a sniff of the bytes."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from chorus.runtime.knowledge.parsing.errors import ParseError
from chorus.runtime.knowledge.parsing.text import _UTF16_BOMS, _decode, _looks_binary

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
