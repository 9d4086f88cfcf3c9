"""The PDF parser (``pypdf``): one section per page with text."""

from __future__ import annotations

import io
import re
from typing import Any

from chorus.contract.documents import ParsedDocument, Section
from chorus.runtime.knowledge.parsing.errors import ParseError, _describe


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
                opened = bool(reader.decrypt(""))  # PasswordType.NOT_DECRYPTED is 0
            except Exception:
                opened = False
            if not opened:
                raise ParseError("encrypted PDF: a password is required")
        pages = list(reader.pages)
    except ParseError:
        raise
    except Exception as exc:
        raise ParseError(f"corrupt or invalid PDF: {_describe(exc)}") from None
    title = ""
    metadata: dict[str, Any] = {"pages": len(pages)}
    try:
        info = reader.metadata
        if info is not None:
            title = str(info.title or "").strip()
            if info.author:
                metadata["author"] = str(info.author).strip()
    except Exception:
        pass
    sections: list[Section] = []
    unreadable: list[int] = []
    for number, page in enumerate(pages, start=1):
        try:
            raw = page.extract_text() or ""
        except Exception:
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
