"""Text decoding (UTF-8/UTF-16/legacy charsets, binary detection) and the plain text parser."""

from __future__ import annotations

import codecs
import re

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.errors import ParseError

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
